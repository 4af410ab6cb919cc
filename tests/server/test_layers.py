"""The server's layers, as docs/architecture.md draws them: routers parse and answer, services
hold the rules and know nothing of HTTP, and only routers' helpers speak HTTP status codes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVER = Path(__file__).resolve().parents[2] / "src" / "gentity" / "server"

# What a service must not import: the web framework, or the HTTP layer built on it.
HTTP_LAYER = (
    "fastapi",
    "starlette",
    "gentity.server.app",
    "gentity.server.auth",
    "gentity.server.errors",
    "gentity.server.idempotency",
    "gentity.server.middleware",
    "gentity.server.params",
    "gentity.server.routers",
    "gentity.server.sse",
    "gentity.server.web",
)


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


SERVICE_FILES = [
    *sorted((SERVER / "services").glob("*.py")),
    SERVER / "reconciler.py",
    SERVER / "recovery.py",
]
ROUTER_FILES = [*sorted((SERVER / "routers").glob("*.py")), SERVER / "web" / "routes.py"]


@pytest.mark.parametrize("path", SERVICE_FILES, ids=lambda p: p.name)
def test_services_never_import_the_http_layer(path: Path) -> None:
    offending = sorted(m for m in imported_modules(path) if _within(m, HTTP_LAYER))
    assert offending == [], f"{path.name} imports {offending}"


@pytest.mark.parametrize("path", ROUTER_FILES, ids=lambda p: p.name)
def test_routers_leave_queries_to_services(path: Path) -> None:
    # A router may name the session type it hands on; building queries is a service's job.
    queries = sorted(
        m
        for m in imported_modules(path)
        if _within(m, ("sqlalchemy",)) and not _within(m, ("sqlalchemy.ext.asyncio",))
    )
    assert queries == [], f"{path.name} imports {queries}"


def test_the_checks_see_imports() -> None:
    # Guards the two tests above against passing on files they failed to read.
    assert "fastapi" in imported_modules(SERVER / "app.py")
    assert "sqlalchemy.select" in imported_modules(SERVER / "services" / "instances.py")
    assert len(SERVICE_FILES) > 5 and len(ROUTER_FILES) > 5
