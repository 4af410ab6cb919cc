"""Fly.io Machines as compute: the API client (``api``) the Fly provider is built on."""
