"""Fakes of the things at watchdog's process boundary (an LLM endpoint, ...), for tests and scripts."""
