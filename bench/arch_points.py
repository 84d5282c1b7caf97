"""Placeholder: filled in by its family's cases."""
CASES = {}
