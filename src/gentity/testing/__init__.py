"""Fakes of outside services, for tests and local runs."""
