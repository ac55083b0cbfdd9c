"""Scoped logging and warning settings for one quantization run.

LogSeverityLevel, DebugMode, IgnoreWarnings and CryptoMode act on the `qrewrite` logger
and on Python warnings only while a run lasts; the previous settings come back after.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator

from qrewrite.config import QConfig

PACKAGE_LOGGER = logging.getLogger("qrewrite")

_LEVELS = {
    0: logging.DEBUG,
    1: logging.INFO,
    2: logging.WARNING,
    3: logging.ERROR,
    4: logging.CRITICAL,
}


def log_level(config: QConfig) -> int:
    """Return the `logging` level that the config requests."""
    options = config.options
    if options.CryptoMode:
        return logging.CRITICAL + 1
    if options.DebugMode:
        return logging.DEBUG
    return _LEVELS[options.LogSeverityLevel]


@contextlib.contextmanager
def run_context(config: QConfig) -> Iterator[None]:
    """Apply the config's logging and warning settings for the duration of a run.

    When no handler is configured anywhere, messages go to stderr through a temporary
    handler, so INFO lines show without the caller setting up logging.
    """
    previous_level = PACKAGE_LOGGER.level
    PACKAGE_LOGGER.setLevel(log_level(config))
    handler: logging.Handler | None = None
    if not PACKAGE_LOGGER.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("qrewrite %(levelname)s: %(message)s"))
        PACKAGE_LOGGER.addHandler(handler)

    with warnings.catch_warnings():
        if config.options.IgnoreWarnings or config.options.CryptoMode:
            warnings.simplefilter("ignore")
        try:
            yield
        finally:
            PACKAGE_LOGGER.setLevel(previous_level)
            if handler is not None:
                PACKAGE_LOGGER.removeHandler(handler)
