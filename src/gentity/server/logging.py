"""Keep secrets out of log lines.

WebSocket clients pass their token as ``?token=gn_live_…`` (browsers cannot set headers on a
WebSocket), and uvicorn logs request paths with their query strings. A filter on uvicorn's
loggers masks those values before any handler sees them.
"""

from __future__ import annotations

import logging
import re

_SECRET_QUERY = re.compile(r"((?:^|[?&\s])(?:token|access_token|api_key|apiKey)=)[^&\s\"']+")
_BARE_TOKEN = re.compile(r"gn_live_[0-9A-Za-z]{4,}")


def mask(text: str) -> str:
    text = _SECRET_QUERY.sub(r"\1***", text)
    return _BARE_TOKEN.sub("gn_live_***", text)


class SecretFilter(logging.Filter):
    """Rewrites a record's message and arguments with secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(mask(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = mask(record.msg)
        if isinstance(record.msg, str):
            record.msg = mask(record.msg)
        return True


_FILTER = SecretFilter()


def install_secret_filters() -> None:
    """Attach the filter to the loggers that print request lines (idempotent)."""
    for name in ("uvicorn.access", "uvicorn.error", "uvicorn", "gentity"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
