"""The systemd units in contrib/systemd: their command lines parse, systemd accepts them, socket activation serves.

Each unit's ExecStart is read back from the file and its node options go
through the plugin's own `Options`, so a unit can't drift from what the node
accepts.  `systemd-analyze verify` (on copies whose ExecStart points at this
venv's twistd, since verify refuses a missing binary) and
`systemd-socket-activate` are used when installed, and the tests say so when
they are skipped.
"""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys

from twisted.internet import error, reactor
from twisted.logger import ILogObserver
from twisted.python.reflect import namedAny
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from chaincore.service.tap import Options

from tests.support.processes import OutputProcess, node_http_client
from tests.support.waiting import free_port, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNIT_DIR = os.path.join(ROOT, "contrib", "systemd")
SERVICES = {"chaincore.service": "tcp:5000:interface=127.0.0.1",
            "chaincore-socket.service": "systemd:domain=INET:index=0"}
UNITS = sorted(SERVICES) + ["chaincore.socket"]
INSTALLED_TWISTD = "/opt/chaincore/venv/bin/twistd"
VENV_TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def unit_settings(name: str) -> dict:
    """{key: [values...]} of a unit file, continuation lines joined, comments dropped (sections ignored)."""
    with open(os.path.join(UNIT_DIR, name)) as f:
        text = f.read().replace("\\\n", " ")
    settings = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def exec_start(name: str) -> list:
    (command,) = unit_settings(name)["ExecStart"]
    return shlex.split(command)

class UnitCommandTests(SynchronousTestCase):
    def test_node_options_parse(self):
        """Each service's node options are accepted by the plugin's Options and give the endpoint the unit means."""
        for name, endpoint in SERVICES.items():
            argv = exec_start(name)
            options = Options()
            options.parseOptions(argv[argv.index("chaincore") + 1:])
            self.assertEqual((options["endpoint"], options["datadir"], options["network"]),
                             (endpoint, "/var/lib/chaincore", "main"), name)

    def test_twistd_runs_in_the_foreground_to_the_journal(self):
        """Each service runs the venv's twistd in the foreground, without a pidfile, logging for the journal."""
        for name in SERVICES:
            argv = exec_start(name)
            self.assertEqual(argv[0], INSTALLED_TWISTD, name)
            twistd_args = argv[1:argv.index("chaincore")]
            self.assertEqual(sorted(twistd_args), ["--logger=chaincore.logs.journal", "--nodaemon", "--pidfile="],
                             name)

    def test_services_share_user_state_and_hardening(self):
        """Both services run as chaincore in /var/lib/chaincore, restart on failure and keep the same hardening."""
        wanted = {"User": ["chaincore"], "StateDirectory": ["chaincore"], "Restart": ["on-failure"],
                  "WorkingDirectory": ["/var/lib/chaincore"], "NoNewPrivileges": ["yes"],
                  "ProtectSystem": ["strict"], "ProtectHome": ["yes"], "PrivateTmp": ["yes"], "Type": ["exec"]}
        plain, activated = (unit_settings(name) for name in SERVICES)
        for settings in (plain, activated):
            self.assertEqual({k: settings.get(k) for k in wanted}, wanted)
        skip = {"Description", "ExecStart", "Requires", "After", "Conflicts", "WantedBy"}
        self.assertEqual({k: v for k, v in plain.items() if k not in skip},
                         {k: v for k, v in activated.items() if k not in skip})

    def test_socket_names_its_descriptor_and_service(self):
        """The socket passes a named descriptor (twistd ignores unnamed ones) to the socket-activated service."""
        settings = unit_settings("chaincore.socket")
        self.assertEqual(settings["FileDescriptorName"], ["chaincore"])
        self.assertEqual(settings["Service"], ["chaincore-socket.service"])
        self.assertEqual(settings["ListenStream"], ["127.0.0.1:5000"])
        self.assertIn("chaincore.socket", unit_settings("chaincore-socket.service")["Requires"])

    def test_logger_factories(self):
        """chaincore.logs.journal and chaincore.logs.json_lines are no-argument factories of log observers."""
        for name in ("chaincore.logs.journal", "chaincore.logs.json_lines"):
            self.assertTrue(ILogObserver.providedBy(namedAny(name)()), name)


class VerifyTests(SynchronousTestCase):
    def setUp(self):
        if shutil.which("systemd-analyze") is None:
            raise SkipTest("systemd-analyze is not installed")
        if not os.path.exists(VENV_TWISTD):
            raise SkipTest(f"no twistd beside {sys.executable} to point the units' ExecStart at")

    def test_units_verify_cleanly(self):
        """`systemd-analyze verify` accepts every unit with rc 0 and nothing on stderr (it warns with rc 0)."""
        copies = self.mktemp()
        os.makedirs(copies)
        for name in UNITS:
            with open(os.path.join(UNIT_DIR, name)) as f:
                text = f.read()
            with open(os.path.join(copies, name), "w") as f:
                f.write(text.replace(INSTALLED_TWISTD, VENV_TWISTD))
        for name in UNITS:
            done = subprocess.run(["systemd-analyze", "verify", os.path.abspath(os.path.join(copies, name))],
                                  capture_output=True, text=True, timeout=60)
            self.assertEqual((done.returncode, done.stderr), (0, ""), name)


ActivatedNode = OutputProcess  # the socket-activated twistd child


class SocketActivationTests(TestCase):
    timeout = 60

    def setUp(self):
        self.activate = shutil.which("systemd-socket-activate")
        if self.activate is None:
            raise SkipTest("systemd-socket-activate is not installed")
        self.http = node_http_client(self)

    async def test_activated_node_serves_status(self):
        """twistd started by systemd-socket-activate with the socket unit's --port serves /status on that socket,
        advertises its port, and stops cleanly on SIGTERM."""
        port, datadir = free_port(), os.path.abspath(self.mktemp())
        argv = exec_start("chaincore-socket.service")
        node_args = argv[argv.index("chaincore"):]
        node_args[node_args.index("--network") + 1] = "regtest"
        node_args[node_args.index("--datadir") + 1] = datadir
        command = [self.activate, "-l", f"127.0.0.1:{port}", "--fdname=chaincore",
                   VENV_TWISTD, "-n", "--pidfile=", "--logger=chaincore.logs.journal"] + node_args + [
                   "--discover-ports", ""]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
        proc = ActivatedNode()
        transport = reactor.spawnProcess(proc, command[0], command, env=env, path=os.path.dirname(datadir))

        def kill():
            if not proc.ended.called:
                transport.signalProcess("KILL")
                return proc.ended
        self.addCleanup(kill)

        async def status():
            if proc.ended.called:
                self.fail(f"the node exited:\n{proc.output.decode(errors='replace')}")
            try:
                response = await self.http.get(f"http://127.0.0.1:{port}/status", timeout=5)
                return json.loads(await response.content()) if response.code == 200 else None
            except Exception:  # the first connection starts twistd; until then it waits in the backlog
                return None

        body = await wait_until(status, 30, interval_s=0.2)
        self.assertEqual((body["network"], body["height"], body["url"]), ("regtest", 0, f"http://localhost:{port}"))

        transport.signalProcess("TERM")  # systemd-socket-activate exec'd twistd: same pid
        reason = await proc.ended
        self.assertIsInstance(reason, error.ProcessTerminated)
        self.assertEqual(reason.signal, signal.SIGTERM, proc.output)
        self.assertNotIn(b"Traceback", proc.output)
        self.assertIn(b"store closed", proc.output)
