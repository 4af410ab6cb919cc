"""Gentity: a self-hostable control plane for AI coding agents."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from gentity.client import ApiError, AsyncClient, Client

__all__ = ["ApiError", "AsyncClient", "Client", "__version__"]

# The SDK pulls in httpx, pydantic and websockets: load it on first use so that
# `import gentity` (done by the guest daemon and every CLI start) stays cheap.
_LAZY = frozenset({"Client", "AsyncClient", "ApiError"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import gentity.client

        return getattr(gentity.client, name)
    raise AttributeError(f"module 'gentity' has no attribute {name!r}")
