"""Secrets are masked in every log record, whichever logger creates it and whichever handler
writes it, including handlers added after the masking was installed."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from gentity.server.logging import install_secret_filters

TOKEN = "gn_live_" + "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def parent_handler() -> Iterator[Collect]:
    """A handler on a parent logger, added after the masking was installed (as uvicorn adds
    its own when it configures logging)."""
    install_secret_filters()
    handler = Collect()
    # Not uvicorn's own loggers: another test's uvicorn may have configured those with
    # `propagate=False` and formatters of its own.
    parent = logging.getLogger("gentity_test_parent")
    parent.addHandler(handler)
    level = parent.level
    parent.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        parent.removeHandler(handler)
        parent.setLevel(level)


def test_a_child_loggers_record_is_masked(parent_handler: Collect) -> None:
    child = logging.getLogger("gentity_test_parent.access.child")
    child.info("GET /api/instances/x/terminal?token=%s HTTP/1.1", TOKEN)
    child.info("opened %s", f"/x?handoff=one-time-code&token={TOKEN}")
    try:
        raise RuntimeError(f"failed with {TOKEN}")
    except RuntimeError:
        child.exception("request failed")
    text = "\n".join(parent_handler.lines)
    assert "terminal?token=***" in text and "handoff=***" in text
    assert TOKEN[8:] not in text and "one-time-code" not in text
    assert "RuntimeError: failed with gn_live_***" in text
