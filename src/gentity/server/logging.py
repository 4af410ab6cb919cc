"""Keep secrets out of log lines.

WebSocket clients pass their token as ``?token=gn_live_…`` (browsers cannot set headers on a
WebSocket), the subdomain handoff carries a one-time code as ``?handoff=…``, and uvicorn logs
request paths with their query strings. A filter on a logger only sees records created on that
very logger (not those of its children, which propagate straight to the handlers), and a
handler filter only covers the handlers that exist when it is attached. So the masking happens
where every record passes: the log record factory. A record whose formatted message holds a
secret has it masked as the record is created (its arguments, or the whole message), and so
has the text of any exception it carries.
"""

from __future__ import annotations

import contextlib
import logging
import re
import traceback
from typing import Any
from urllib.parse import unquote

# Query parameters whose values are secrets, compared after percent-decoding the name, so
# ``%74oken=`` and ``to%6Ben=`` are caught as well as ``token=``.
SECRET_PARAMETERS = frozenset({"token", "access_token", "api_key", "apikey", "handoff"})
_PARAMETER = re.compile(r"(?P<name>[^\s?&;=\"'<>]+)=(?P<value>[^&;\s\"'<>]*)")
# A token anywhere, also with its underscores percent-encoded.
_BARE_TOKEN = re.compile(r"gn(?:_|%5f)live(?:_|%5f)[%0-9a-z]+", re.IGNORECASE)
MASK = "***"


def _decoded(name: str) -> str:
    # Decode until stable (a client may encode twice); a few rounds are plenty.
    for _ in range(3):
        decoded = unquote(name)
        if decoded == name:
            break
        name = decoded
    return name.lower()


def _mask_parameter(match: re.Match[str]) -> str:
    if _decoded(match["name"]).lstrip("?&;") in SECRET_PARAMETERS:
        return f"{match['name']}={MASK}"
    return match[0]


def mask(text: str) -> str:
    text = _PARAMETER.sub(_mask_parameter, text)
    return _BARE_TOKEN.sub("gn_live_" + MASK, text)


def _mask_arg(arg: object) -> object:
    if arg is None or isinstance(arg, (bool, int, float)):
        return arg
    text = arg if isinstance(arg, str) else str(arg)
    masked = mask(text)
    return arg if masked == text else masked


def _mask_record(record: logging.LogRecord) -> None:
    message = record.getMessage()
    masked = mask(message)
    if masked != message:
        args = record.args
        # Keep the arguments' shape when masking them one by one is enough (formatters such
        # as uvicorn's access log unpack them); else freeze the masked message.
        if isinstance(args, tuple):
            record.args = tuple(_mask_arg(a) for a in args)
            if mask(record.getMessage()) == record.getMessage() == masked:
                return
        record.msg, record.args = masked, None
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if mask(text) != text:
            record.exc_text = mask(text)


def _masked_record_factory(factory: Any) -> Any:
    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = factory(*args, **kwargs)
        # A broken format string is left for logging to report when the record is emitted.
        with contextlib.suppress(Exception):
            _mask_record(record)
        return record

    make.gentity_masks = True  # type: ignore[attr-defined]
    return make


def install_secret_filters() -> None:
    """Mask secrets in every log record created in this process from now on (idempotent)."""
    current = logging.getLogRecordFactory()
    if not getattr(current, "gentity_masks", False):
        logging.setLogRecordFactory(_masked_record_factory(current))
