"""The twistd plugin's options and service factory: `twistd chaincore --port 5000` (CONTRACT 1)."""

import twisted
from twisted.python import usage

from .. import __version__

from .config import finish_options


class Options(usage.Options):
    optParameters = [
        ["port", "p", "5000",
         "Port number, or a Twisted server endpoint description "
         "(tcp:5000:interface=0.0.0.0, systemd:domain=INET:index=0, ssl:...)."],
        ["interface", None, "127.0.0.1", "Bind address for a plain port number."],
        ["datadir", None, None,
         "Where the chain, UTXO set and peer table live (default: a per-port folder under the user's data directory)."],
        ["network", None, "main", "Network: main or regtest."],
        ["discover-ports", None, "5000-5011",
         "Local ports to probe for peers (5000-5011, 5000,5002; an empty string disables)."],
        ["advertise", None, None, "The base URL other nodes should use for this node (default http://localhost:PORT)."],
        ["mine", None, None, "Mine in the background, paying to this address."],
        ["max-connections", None, "1024", "Open HTTP connections the node holds in all."],
        ["connections-per-address", None, "8",
         "Open connections one stranger's address may hold (loopback clients 256, known peers 16)."],
        ["header-timeout", None, "10", "Seconds a request's headers may take from their first byte (then 408)."],
        ["body-min-rate", None, "10000",
         "Bytes a second a request body must keep up after a 10 s grace (then 408)."],
        ["stranger-budget", None, "120/20",
         "Request tokens of each stranger's address: BURST/PER_SECOND (expensive endpoints cost 2-20)."],
        ["peer-budget", None, "600/100", "Request tokens of each known peer's address: BURST/PER_SECOND."],
        ["loopback-budget", None, "2000/500", "Request tokens of each loopback address: BURST/PER_SECOND."],
        ["outbound", None, 8, "Peers this node polls and announces to, chosen across subnets (inbound peers "
                              "are served besides).", int],
    ]

    def __init__(self):
        super().__init__()
        self["peers"] = []

    def opt_peer(self, url):
        """A seed peer URL, e.g. http://localhost:5001 (repeatable)."""
        self["peers"].append(url)

    def postOptions(self):
        finish_options(self)

    def opt_version(self):
        """Print ChainCore's version and exit."""
        print(f"ChainCore {__version__} (Twisted {twisted.__version__})")
        raise SystemExit(0)

    def parseOptions(self, options=None):
        """Parse options; under twistd a mistake is one line and exit status 1, not the whole usage text."""
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if getattr(self, "parent", None) is None:
                raise  # parsed on its own (tests, tools): the caller decides how to show it
            raise SystemExit(f"twistd chaincore: {e} (see twistd chaincore --help)") from None


def makeService(options):
    """The node's MultiService (twistd calls this after the options are checked)."""
    from .wiring import make_node_service  # the twisted.web and p2p modules load only when a node starts
    return make_node_service(options)
