"""Logging: quiet by default, and observers for `twistd --logger`.

ChainCore's modules log through `logger(namespace)`.  Events below the level
set by CHAINCORE_LOG_LEVEL (default `info`; `debug` shows every probe and
request decision) are dropped before they reach twistd's log.  For systemd,
`twistd --logger=chaincore.logs.journal` writes one plain line per event to
stdout without a timestamp (the journal adds it); `chaincore.logs.json_lines`
writes one JSON object per line.
"""

import json
import os
import sys

from twisted.logger import (
    FilteringLogObserver, ILogObserver, LogLevel, LogLevelFilterPredicate, Logger, formatEvent,
    globalLogPublisher, textFileLogObserver,
)
from zope.interface import provider


def configured_level() -> LogLevel:
    name = os.environ.get("CHAINCORE_LOG_LEVEL", "info").lower()
    try:
        return LogLevel.levelWithName(name)
    except Exception:
        return LogLevel.info


def _forward(event):
    globalLogPublisher(event)


_predicate = LogLevelFilterPredicate(defaultLogLevel=configured_level())
_observer = FilteringLogObserver(_forward, [_predicate])


def enabled(namespace: str, level: LogLevel) -> bool:
    """Whether events of level in namespace reach the log (hot paths skip building the ones that would not)."""
    return level >= _predicate.logLevelForNamespace(namespace)


def logger(namespace: str) -> Logger:
    """A Logger for namespace whose events below the configured level are dropped."""
    return Logger(namespace=namespace, observer=_observer)


def journal():
    """A `--logger` factory: plain text lines on stdout, no timestamps (journald adds them)."""
    return textFileLogObserver(sys.__stdout__, timeFormat=None)


@provider(ILogObserver)
def _json_line(event):
    record = {"t": event.get("log_time"), "level": event["log_level"].name, "ns": event.get("log_namespace"),
              "msg": formatEvent(event)}
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    sys.__stdout__.write(json.dumps(record) + "\n")
    sys.__stdout__.flush()


def json_lines():
    """A `--logger` factory: one JSON object per line on stdout."""
    return _json_line
