"""Detectors turn committed agent steps into findings."""
