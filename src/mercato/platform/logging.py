"""structlog setup: JSON lines in production, readable console output in a terminal."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from mercato.platform.events.envelope import current_correlation_id
from mercato.platform.tracing import log_ids

# Values that look like credentials are masked wherever they appear in a log event.
_SECRET_KEYS = re.compile(
    r"pass(word)?|secret|token|authorization|cookie|api[_-]?key|credential", re.IGNORECASE
)
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if key in {"event", "level", "timestamp", "logger"}:
            continue
        if _SECRET_KEYS.search(key) and value not in (None, "", True, False):
            event_dict[key] = "***"
        elif isinstance(value, str):
            event_dict[key] = _JWT.sub("***", _BEARER.sub(r"\1***", value))
    return event_dict


def _add_correlation(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    correlation_id = current_correlation_id.get()
    if correlation_id and "correlation_id" not in event_dict:
        event_dict["correlation_id"] = correlation_id
    # The trace's ids, so a log line leads to its trace and a span to its log lines.
    for key, value in log_ids().items():
        event_dict.setdefault(key, value)
    return event_dict


def configure_logging(level: str = "INFO", json: bool | None = None) -> None:
    """Route structlog and stdlib logging through one pipeline."""
    if json is None:
        json = not sys.stderr.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_correlation,
        _redact,
    ]
    # show_locals=False: rich tracebacks print every frame's local variables by default, and
    # those hold request bodies, passwords and tokens.
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(
            exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False)
        )
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if json else _passthrough,
            _JWTScrubber(),
            renderer,
        ],
    )
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "aiormq", "aio_pika", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def _passthrough(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Any:
    return event_dict


class _JWTScrubber:
    """Last pass over rendered fields (tracebacks included) for anything shaped like a token."""

    def __call__(self, _: Any, __: str, event_dict: MutableMapping[str, Any]) -> Any:
        for key in ("exception", "event"):
            value = event_dict.get(key)
            if isinstance(value, str):
                event_dict[key] = _JWT.sub("***", _BEARER.sub(r"\1***", value))
        return event_dict
