"""What an operator sees from twistd (CONTRACT 1, 7): option errors in one line, --version, a warning
when the node listens beyond loopback without --advertise, and log lines free of internal names."""

import os

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chaincore import __version__
from chaincore.service.node_service import exposure_warning
from chaincore.service.tap import Options

from tests.support.processes import OutputProcess, child_env
from tests.support.waiting import free_port, wait_until

from . import test_plugin as plugin  # by module: names imported into this one would run their tests here


def parsed(*argv):
    options = Options()
    options.parseOptions(list(argv))
    return options


class ExposureWarningTests(SynchronousTestCase):
    def test_loopback_needs_no_warning(self):
        """The default loopback interface, ::1 and localhost need no --advertise."""
        for argv in ([], ["--interface", "::1"], ["--port", "tcp:5000:interface=localhost"]):
            self.assertIsNone(exposure_warning(parsed(*argv)), argv)

    def test_public_interface_without_advertise_warns(self):
        """0.0.0.0, a LAN address or a tcp: endpoint with no interface, without --advertise, is warned about."""
        for argv in (["--interface", "0.0.0.0"], ["--interface", "192.168.1.20"], ["--port", "tcp:5000"]):
            warning = exposure_warning(parsed(*argv))
            self.assertIn("--advertise", warning)
            self.assertIn("5000", warning)

    def test_advertise_silences_it(self):
        """With --advertise the operator has said how peers reach the node: no warning."""
        self.assertIsNone(exposure_warning(parsed("--interface", "0.0.0.0", "--advertise", "http://node.lan:5000")))


class OptionErrorTests(TestCase):
    run_twistd = plugin.StartupFailureTests.run_twistd  # the same helpers, without re-running that class's tests
    mktemp_dir = plugin.StartupFailureTests.mktemp_dir
    assertOneLine = plugin.StartupFailureTests.assertOneLine

    async def test_bad_network_is_one_line(self):
        """A bad --network is one line naming the choices, with no usage dump, and exit status 1."""
        output, code = await self.run_twistd("-n", "chaincore", "--network", "testnet")
        self.assertOneLine(output, code, "twistd chaincore: --network must be one of main, regtest")

    async def test_unknown_option_is_one_line(self):
        """An unknown option is one line too."""
        output, code = await self.run_twistd("-n", "chaincore", "--bogus")
        self.assertOneLine(output, code, "twistd chaincore: option --bogus not recognized")

    async def test_version(self):
        """`twistd chaincore --version` prints ChainCore's version and exits 0."""
        output, code = await self.run_twistd("chaincore", "--version")
        self.assertEqual(code, 0, output)
        self.assertIn(f"ChainCore {__version__}", output)


class StartupLogTests(plugin.PluginTestCase):
    async def test_public_bind_warns_and_names_no_classes(self):
        """A node on 0.0.0.0 without --advertise warns at start; its log names the HTTP API, not a class."""
        port = free_port()
        datadir = os.path.abspath(self.mktemp())
        proc = OutputProcess()
        argv = plugin.twistd_command() + plugin.node_args(port, datadir) + ["--interface", "0.0.0.0"]
        proc.transport = reactor.spawnProcess(proc, argv[0], argv, env=child_env(), path=self.mktemp_dir())

        def kill():
            if not proc.ended.called:
                proc.transport.signalProcess("KILL")
                return proc.ended

        self.addCleanup(kill)
        await self.wait_for_status(f"http://127.0.0.1:{port}", proc)
        await wait_until(lambda: b"starting on" in proc.output, 10)
        await self.stop(proc)
        self.assertIn(b"--advertise", proc.output)
        self.assertIn(b"ChainCore HTTP API starting on", proc.output)
        self.assertNotIn(b"QuietSite", proc.output)

