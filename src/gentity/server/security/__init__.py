"""Secrets handling: password hashes, API token format, encryption at rest."""
