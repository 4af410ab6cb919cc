"""The ``gentity`` command line."""
