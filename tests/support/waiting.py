"""Waiting on the real reactor, and free loopback ports: for tests that run real servers or processes."""

import inspect
import socket

from twisted.internet import defer, task


def free_ports(n: int) -> list:
    """n distinct free TCP ports on 127.0.0.1 (bound together, then released; another process could race us)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    """One free TCP port on 127.0.0.1."""
    return free_ports(1)[0]


async def wait_until(predicate, timeout_s: float = 10.0, interval_s: float = 0.02, what: str = "condition",
                     clock=None):
    """Poll predicate on the reactor until it returns something truthy, and return that.

    predicate may return a Deferred or a coroutine.  Raises TimeoutError, naming `what`,
    after timeout_s: never a blind sleep, never longer than needed.
    """
    if clock is None:
        from twisted.internet import reactor as clock
    deadline = clock.seconds() + timeout_s
    while True:
        value = predicate()
        if inspect.iscoroutine(value):
            value = await defer.ensureDeferred(value)
        elif isinstance(value, defer.Deferred):
            value = await value
        if value:
            return value
        if clock.seconds() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        await task.deferLater(clock, interval_s, lambda: None)
