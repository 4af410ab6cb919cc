"""The guest daemon that runs inside every instance, and its asyncio client.

``python -m gentity.guest`` starts the daemon (config as JSON on stdin);
:mod:`gentity.guest.client` is what the control plane uses to talk to it.
Everything in this package uses only the Python standard library.
"""
