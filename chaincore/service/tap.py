"""The twistd plugin's options and service factory: `twistd chaincore --port 5000` (CONTRACT 1)."""

from twisted.python import usage


def parse_ports(text: str) -> list:
    """Ports from `5000-5011`, `5000,5002` or a mix; an empty string gives none."""
    ports = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, dash, hi = part.partition("-")
        try:
            lo_n, hi_n = int(lo), int(hi if dash else lo)  # "5000-" is a typo, not port 5000
        except ValueError:
            raise ValueError(f"bad port range {part!r}") from None
        if not (0 < lo_n <= hi_n <= 65535) or hi_n - lo_n > 1024:
            raise ValueError(f"bad port range {part!r}")
        ports.extend(range(lo_n, hi_n + 1))
    return ports


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
    ]

    def __init__(self):
        super().__init__()
        self["peers"] = []

    def opt_peer(self, url):
        """A seed peer URL, e.g. http://localhost:5001 (repeatable)."""
        self["peers"].append(url)

    def postOptions(self):
        from .config import finish_options
        finish_options(self)

    def opt_version(self):
        """Print ChainCore's version and exit."""
        from .. import __version__
        import twisted
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
    from .node_service import make_node_service
    return make_node_service(options)
