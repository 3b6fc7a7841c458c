"""Collectors turn OTLP requests into span rows and normalized agent steps."""
