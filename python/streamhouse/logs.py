"""Logging set-up: stdlib ``logging`` with the runbook's line format.

Operators grep for the runbook's lines (``WARN  High memory usage: ...``, ``ERROR WAL append failed: ...``),
so the level is written as a five-character column (``WARN `` not ``WARNING``) after a UTC timestamp:

    2026-01-31T12:00:00.123Z WARN  Segment upload failed for orders-0 (attempt 3): ...; retrying in 0.8s

Every StreamHouse module logs through ``get_logger`` (children of the ``streamhouse`` logger), so
``setup_logging`` configures them all in one place and leaves other libraries' loggers alone.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from typing import TextIO

ROOT_LOGGER = "streamhouse"

_LEVEL_NAMES = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARN",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "FATAL",
}

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class RunbookFormatter(logging.Formatter):
    """``<UTC timestamp> <LEVEL padded to 5> <message>``, plus the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        level = _LEVEL_NAMES.get(record.levelno, record.levelname)
        line = f"{stamp}.{int(record.msecs):03d}Z {level:<5} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def get_logger(name: str) -> logging.Logger:
    """A logger under ``streamhouse`` (pass ``__name__``)."""
    if name != ROOT_LOGGER and not name.startswith(ROOT_LOGGER + "."):
        name = f"{ROOT_LOGGER}.{name}"
    return logging.getLogger(name)


LOG_FILE_BACKUPS = 3  # rotated log files kept beside ``log_file`` (log_file.1 ... log_file.3)


def setup_logging(
    level: str = "info",
    stream: TextIO | None = None,
    *,
    log_file: str | None = None,
    max_bytes: int = 64 << 20,
) -> logging.Handler:
    """Send StreamHouse logs to ``stream`` (stderr by default), or to ``log_file`` rotated at
    ``max_bytes`` with ``LOG_FILE_BACKUPS`` old files kept (so logs never fill the disk), in the runbook
    format at ``level`` (the ``log_level`` knob). Idempotent: a second call replaces the handler it
    installed."""
    logger = logging.getLogger(ROOT_LOGGER)
    for old in list(logger.handlers):
        if getattr(old, "_streamhouse", False):
            logger.removeHandler(old)
            old.close()
    handler: logging.Handler
    if log_file:
        handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=max_bytes, backupCount=LOG_FILE_BACKUPS, encoding="utf-8"
        )
    else:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(RunbookFormatter())
    setattr(handler, "_streamhouse", True)  # noqa: B010 (a marker attribute on a stdlib object)
    logger.addHandler(handler)
    logger.setLevel(_LEVELS.get(level, logging.INFO))
    logger.propagate = False
    return handler


__all__ = ["ROOT_LOGGER", "RunbookFormatter", "get_logger", "setup_logging"]
