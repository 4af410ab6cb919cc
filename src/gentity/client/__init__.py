"""The Python SDK for the Gentity REST API.

>>> from gentity.client import Client
>>> with Client() as gentity:                      # URL and token from env or `gentity login`
...     created = gentity.instances.create("shell", "none", "bash")
...     for line in gentity.logs(created.id):
...         print(line.message)
...     with gentity.attach(created.id) as terminal:
...         terminal.send("uname -a; exit\n")
...         for event in terminal: ...

:class:`Client` blocks; :class:`AsyncClient` is its asyncio twin. Both raise :class:`ApiError`
for every failure, :class:`ApiConnectionError` when the server cannot be reached.
"""

from gentity.client.aio import AsyncClient
from gentity.client.base import ExecOutput
from gentity.client.config import ConfigError
from gentity.client.errors import ApiConnectionError, ApiError
from gentity.client.streams import AsyncEventStream, AsyncLogStream, EventStream, LogStream
from gentity.client.sync import Client
from gentity.client.terminal import AsyncTerminal, Terminal, TerminalExit, TerminalOutput

__all__ = [
    "ApiConnectionError",
    "ApiError",
    "AsyncClient",
    "AsyncEventStream",
    "AsyncLogStream",
    "AsyncTerminal",
    "Client",
    "ConfigError",
    "EventStream",
    "ExecOutput",
    "LogStream",
    "Terminal",
    "TerminalExit",
    "TerminalOutput",
]
