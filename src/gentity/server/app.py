"""The ASGI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from gentity import __version__
from gentity.catalog import load_catalog, read_pins
from gentity.providers.compute.registry import Providers
from gentity.providers.dns.registry import create_dns_provider
from gentity.server import recovery, web
from gentity.server.context import AppContext
from gentity.server.db.database import Database
from gentity.server.errors import install_error_handlers
from gentity.server.logging import install_secret_filters
from gentity.server.metrics import RequestMetrics
from gentity.server.middleware import BodySizeLimit, CrossOriginGuard, SecurityHeaders
from gentity.server.node import NodeIdentity
from gentity.server.openapi import install_openapi
from gentity.server.proxies import TrustedProxyHeaders
from gentity.server.reconciler import reconcile_once, run_forever
from gentity.server.routers import (
    auth,
    catalog,
    events,
    files,
    health,
    instances,
    metrics,
    ports,
    regions,
    terminal,
    tokens,
)
from gentity.server.routers import exec as exec_router
from gentity.server.security.crypto import SecretBox
from gentity.server.services import autostop
from gentity.server.web.preview import PreviewProxy
from gentity.settings import Settings

log = logging.getLogger(__name__)


def _private_directory(path: Path) -> None:
    """The data directory holds the database and the key file: this user's eyes only."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:
        log.warning("%s was readable by other users; restricting it to mode 0700", path)
        path.chmod(0o700)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the control plane. All configuration comes in through ``settings``."""
    settings = settings or Settings()
    install_secret_filters()
    _private_directory(settings.data_dir)
    ctx = AppContext(
        settings=settings,
        db=Database(settings.resolved_database_url, settings.database_limits),
        box=SecretBox.from_settings(
            settings.secret_key, settings.data_dir, settings.resolved_secret_key_file
        ),
        # `gentity agents update` pins versions in the data directory, over the catalog's.
        catalog=load_catalog().with_pins(read_pins(settings.data_dir)),
        providers=Providers.from_settings(settings),
        dns=create_dns_provider(settings),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.node = NodeIdentity(settings.data_dir)
        await ctx.db.migrate()
        for warning in ctx.providers.isolation_warnings():
            log.warning("ISOLATION: %s (see docs/security.md)", warning)
        await ctx.providers.adopt()
        # The first pass runs before serving, so rows left by a crash are settled at once.
        await reconcile_once(ctx)
        reconciler = asyncio.create_task(run_forever(ctx), name="reconciler")
        idle_check = asyncio.create_task(autostop.run_forever(ctx), name="auto-stop")
        try:
            yield
        finally:
            reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reconciler
            idle_check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await idle_check
            await recovery.stop_watches(ctx)
            # Operations in flight finish (they are short) so no row is left half-done.
            if ctx.background:
                await asyncio.wait(set(ctx.background), timeout=30)
            await ctx.credentials.close()
            await ctx.logfeeds.close()
            await ctx.providers.close()
            await ctx.dns.close()
            await ctx.db.close()
            ctx.node.close()

    app = FastAPI(
        title="Gentity",
        version=__version__,
        summary="Run AI coding agents as cloud instances.",
        openapi_url="/api/openapi.json",
        # FastAPI's Swagger page loads its scripts from a CDN; the schema alone stays served.
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    install_error_handlers(app)
    install_openapi(app)
    for router in (
        health.router,
        catalog.router,
        regions.router,
        auth.router,
        tokens.router,
        instances.router,
        events.router,
        files.router,
        ports.router,
        terminal.router,
        metrics.router,
        exec_router.router,
    ):
        app.include_router(router)
    # The dashboard: page shells (kept out of the OpenAPI schema) and their static files.
    app.include_router(web.router)
    app.mount("/static", web.static_app(), name="static")
    # The last added runs first: believe a trusted proxy's headers before anything looks at
    # the scheme or the client; refuse oversized bodies before anything reads them.
    app.add_middleware(CrossOriginGuard, public_origin=settings.public_url)
    app.add_middleware(SecurityHeaders, hsts=settings.secure_public_url)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        uploads=(files.UPLOAD_PATH, settings.max_upload_bytes),
    )
    # Preview hosts (<port>-<subdomain>.<host>) are the instance's: none of the above applies.
    app.add_middleware(PreviewProxy, ctx=ctx)
    app.add_middleware(TrustedProxyHeaders, networks=settings.trusted_proxy_networks)
    if settings.metrics_token is not None:
        # Outermost, so every answer is counted, the middleware's own refusals included.
        app.add_middleware(RequestMetrics, metrics=ctx.metrics)
    return app
