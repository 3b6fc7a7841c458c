"""Shipped declarative rules files (data, validated by detectors.context_rules)."""
