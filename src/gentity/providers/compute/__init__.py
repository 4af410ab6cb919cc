"""Compute providers: where instances run. One interface (``base``), one registry."""
