"""The browser dashboard: server-rendered page shells whose scripts use the public REST API."""

from gentity.server.web.pages import static_app
from gentity.server.web.routes import router

__all__ = ["router", "static_app"]
