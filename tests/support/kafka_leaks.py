"""kafka-python 3.0.12 leaks the socket of a failed connect(); with the broker down, every
reconnect attempt leaks one, and its ResourceWarning surfaces as "unraisable" under
``filterwarnings = error``. Modules that stop a broker on purpose use :data:`LEAK_FILTER` and
the autouse fixture :func:`collect_leaked_sockets` (import it into the test module).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import pytest

LEAK_FILTER = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)


@pytest.fixture(autouse=True)
def collect_leaked_sockets() -> Iterator[None]:
    """Free kafka-python's leaked sockets while the module's warning filter is active.

    pytest keeps every captured log record until the session ends, and kafka-python logs its
    exception objects (and connections), whose tracebacks pin those sockets: the
    ResourceWarnings would then fire at exit, outside any filter. So kafka's records are
    flattened to text as they are made, and a collection runs at teardown.
    """
    loggers = [
        logger
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger) and (name == "kafka" or name.startswith("kafka."))
    ]
    flatten = _FlattenRecord()
    for logger in loggers:
        logger.addFilter(flatten)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(flatten)
        gc.collect()


class _FlattenRecord(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = record.getMessage()
        record.args = None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return True
