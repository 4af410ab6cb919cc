"""The ``local`` provider: each instance is a sandboxed process tree on this host."""
