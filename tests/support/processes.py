"""A ProcessProtocol that keeps a child's output and tells when it ended, for tests that run real processes."""

from twisted.internet import defer, protocol


class OutputProcess(protocol.ProcessProtocol):
    """A child process: `output` holds its stdout and stderr; `ended` fires with the exit reason."""

    def __init__(self):
        self.output = b""
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason):
        self.ended.callback(reason.value)

    def log(self, limit: int = 3000) -> str:
        """The last `limit` characters of the output, as text."""
        return self.output.decode(errors="replace")[-limit:]
