"""The twistd plugin's options (CONTRACT 1): parsing, defaults and refusals, without starting anything."""

import os

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from chaincore.service.config import parse_ports
from chaincore.service.tap import Options

from ..support.builders import ALICE


def parse(*argv) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class PortTests(SynchronousTestCase):
    def test_defaults(self):
        """With no options: port 5000 on 127.0.0.1, main network, ports 5000-5011 probed, no peers, no mining."""
        o = parse()
        self.assertEqual(o["endpoint"], "tcp:5000:interface=127.0.0.1")
        self.assertEqual(o["port_number"], 5000)
        self.assertEqual(o["network"], "main")
        self.assertEqual(o["discover_ports"], list(range(5000, 5012)))
        self.assertEqual((o["peers"], o["mine"], o["advertise"]), ([], None, None))

    def test_port_number(self):
        """A plain port number becomes a TCP endpoint on the interface."""
        o = parse("--port", "5003")
        self.assertEqual((o["endpoint"], o["port_number"]), ("tcp:5003:interface=127.0.0.1", 5003))

    def test_interface(self):
        """--interface sets the bind address of a plain port number."""
        o = parse("--port", "5003", "--interface", "0.0.0.0")
        self.assertEqual(o["endpoint"], "tcp:5003:interface=0.0.0.0")

    def test_ipv6_interface_quoted(self):
        """An IPv6 interface is quoted inside the endpoint description."""
        o = parse("--port", "5003", "--interface", "::1")
        self.assertEqual(o["endpoint"], r"tcp:5003:interface=\:\:1")

    def test_endpoint_string(self):
        """An endpoint description is used as it is, and there is no port number to preflight."""
        o = parse("--port", "tcp:5004:interface=0.0.0.0")
        self.assertEqual((o["endpoint"], o["port_number"]), ("tcp:5004:interface=0.0.0.0", None))
        o = parse("--port", "systemd:domain=INET:index=0")
        self.assertEqual(o["endpoint"], "systemd:domain=INET:index=0")

    def test_bad_ports_refused(self):
        """A port over 65535 or a word that is no endpoint is a usage error."""
        self.assertRaises(usage.UsageError, parse, "--port", "70000")
        self.assertRaises(usage.UsageError, parse, "--port", "fivethousand")

    def test_default_datadir_per_port(self):
        """Two nodes on different ports get different default datadirs, each naming its network and port."""
        a, b = parse("--port", "5001"), parse("--port", "5002", "--network", "regtest")
        self.assertNotEqual(a["datadir"], b["datadir"])
        self.assertIn(os.path.join("main", "node-5001"), a["datadir"])
        self.assertIn(os.path.join("regtest", "node-5002"), b["datadir"])

    def test_datadir_given(self):
        """--datadir is kept as given."""
        self.assertEqual(parse("--datadir", "/srv/chain")["datadir"], "/srv/chain")

    def test_relative_datadir_made_absolute(self):
        """A relative --datadir is taken from the folder twistd starts in, so the startup line names it in full
        and the peer table is saved beside the chain even after twistd changes folder (--rundir)."""
        here = os.path.realpath(self.mktemp())
        os.makedirs(here)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(here)
        self.assertEqual(parse("--datadir", "devnet/node-5000")["datadir"], os.path.join(here, "devnet", "node-5000"))
        self.assertEqual(parse("--datadir=.")["datadir"], here)

    def test_datadir_tilde_expanded(self):
        """`--datadir=~/chain` (where no shell expands the ~) is the chain folder in the home directory,
        not a folder named ~ in the current one."""
        home = os.path.realpath(self.mktemp())
        old = os.environ.get("HOME")
        self.addCleanup(lambda: os.environ.__setitem__("HOME", old) if old is not None else os.environ.pop("HOME"))
        os.environ["HOME"] = home
        self.assertEqual(parse("--datadir=~/chain")["datadir"], os.path.join(home, "chain"))


class DiscoverPortsTests(SynchronousTestCase):
    def test_range(self):
        """5000-5011 is twelve ports."""
        self.assertEqual(parse("--discover-ports", "5000-5011")["discover_ports"], list(range(5000, 5012)))

    def test_list(self):
        """5000,5002 is those two ports; ranges and single ports mix."""
        self.assertEqual(parse("--discover-ports", "5000,5002")["discover_ports"], [5000, 5002])
        self.assertEqual(parse_ports("5000-5001, 6000"), [5000, 5001, 6000])

    def test_empty_disables(self):
        """An empty string probes no port."""
        self.assertEqual(parse("--discover-ports", "")["discover_ports"], [])

    def test_bad_ranges_refused(self):
        """Reversed, out-of-range, zero, huge or non-numeric ranges are usage errors."""
        for text in ("5011-5000", "0-10", "65535-65536", "1-60000", "abc", "5000-", "-5000", "5000-50x1"):
            self.assertRaises(usage.UsageError, parse, "--discover-ports", text)


class PeerMineNetworkTests(SynchronousTestCase):
    def test_repeatable_peer(self):
        """--peer may be given several times; each URL is kept in order."""
        o = parse("--peer", "http://localhost:5001", "--peer", "http://10.0.0.2:5000/")
        self.assertEqual(o["peers"], ["http://localhost:5001", "http://10.0.0.2:5000"])  # normalised

    def test_bad_peer_refused(self):
        """A --peer or --advertise the peer table would not keep is a usage error (the API's own check)."""
        for url in ("localhost:5001", "http://host:1/path", "ftp://host", "http://", "http://u@host:1",
                    "http://host:0", "http://host:65536"):
            self.assertRaises(usage.UsageError, parse, "--peer", url)
            self.assertRaises(usage.UsageError, parse, "--advertise", url)

    def test_mine_address(self):
        """--mine takes a valid address."""
        self.assertEqual(parse("--mine", ALICE.address)["mine"], ALICE.address)

    def test_bad_mine_address_refused(self):
        """--mine with a mistyped address (bad checksum) or garbage is a usage error."""
        typo = ALICE.address[:-1] + ("2" if ALICE.address[-1] != "2" else "3")
        self.assertRaises(usage.UsageError, parse, "--mine", typo)
        self.assertRaises(usage.UsageError, parse, "--mine", "nope")

    def test_networks(self):
        """--network takes main or regtest and refuses anything else."""
        self.assertEqual(parse("--network", "regtest")["network"], "regtest")
        err = self.assertRaises(usage.UsageError, parse, "--network", "testnet")
        self.assertIn("main", str(err))

    def test_advertise(self):
        """--advertise takes a base URL and refuses anything else."""
        self.assertEqual(parse("--advertise", "http://node.example:5000")["advertise"], "http://node.example:5000")
        self.assertRaises(usage.UsageError, parse, "--advertise", "node.example")

    def test_every_option_has_help(self):
        """Every CONTRACT 1 option has help text."""
        text = str(Options())
        for option in ("--port", "--interface", "--datadir", "--network", "--peer", "--discover-ports",
                       "--advertise", "--mine"):
            line = next((ln for ln in text.splitlines() if option + "=" in ln or option + " " in ln), None)
            self.assertIsNotNone(line, option)
            self.assertGreater(len(line.split(option, 1)[1].strip()), 10, line)


class OutboundOptionTests(SynchronousTestCase):
    def test_outbound_degree(self):
        """--outbound defaults to 8, takes 1-64, refuses anything else, and sets the node's outbound degree."""
        from tests.support.nodes import make_node  # the wiring's side of the option
        self.assertEqual(parse()["outbound"], 8)
        self.assertEqual(parse("--outbound", "3")["outbound"], 3)
        for bad in ("0", "65", "many"):
            self.assertRaises(usage.UsageError, parse, "--outbound", bad)
        self.assertEqual(make_node(outbound=3).peers.discovery.degree, 3)
