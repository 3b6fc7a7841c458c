"""Dashboards: the web pages, their JSON API and the guarded SQL endpoint."""
