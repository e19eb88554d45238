"""A testbed of N hosts on one machine: network namespaces joined by the user-space switch, one node each.

Host i is the namespace `<prefix><run>h<i>` with one TAP device of the same
name, address 198.18.S.(i+1)/24 (198.18.0.0/15 is reserved for benchmark
testbeds; S is a /24 no other live testbed holds) and nothing else: no
default route, so its traffic never leaves the testbed.  The machine itself
is the switch's observer at 198.18.S.254, from where tests and benchmarks
reach every node over plain HTTP, outside any delay, loss or partition.

Everything made is recorded in /run/chaincore-testbed/<run>.json, and
`down()` removes it all: node processes, namespaces, TAP devices (they die
with the switch).  A testbed whose owner died is cleaned up by the next one
that starts with the same prefix.  The code is synchronous and stdlib-only,
so the CLI (`scripts/testbed`), benchmarks and trial tests share it.
"""

import atexit
import fcntl
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field

from .traffic import Traffic

PREFIX = "cctb"
REGISTRY = "/run/chaincore-testbed"
NODE_PORT = 5000
OBSERVER_HOST = 254
MAX_HOSTS = 253
STATE_FILE = "testbed.json"
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class TestbedError(Exception):
    """The testbed could not do what was asked; the message is one line for people."""


class TestbedUnavailable(TestbedError):
    """This machine or user cannot run a testbed (not root, no `ip`, no /dev/net/tun)."""


def unavailable_reason(uid: int = None, which=shutil.which, tun: str = "/dev/net/tun"):
    """One line saying why a testbed cannot run here, or None when it can."""
    uid = os.geteuid() if uid is None else uid
    if uid != 0:
        return f"the testbed needs root for network namespaces and TAP devices (running as uid {uid})"
    if which("ip") is None:
        return "the testbed needs the `ip` command (iproute2), which is not installed"
    if not os.path.exists(tun):
        return f"the testbed needs {tun} for TAP devices, which is missing"
    return None


NEIGH_SYSCTL = "/proc/sys/net/ipv4/neigh/default"


def ensure_neighbour_room(hosts: int, sysctl_dir: str = NEIGH_SYSCTL) -> dict:
    """Raise the kernel's ARP table limits so a testbed of `hosts` fits; {name: (old, new)} of those raised.

    The table is one for every namespace: with N hosts each knowing the
    other N - 1 and the observer, N x (N + 1) entries are live, about 2,550
    at 50 hosts, over the default gc_thresh3 of 1,024, and the kernel then
    refuses new entries ("neighbor table overflow"): hosts cannot reach each
    other.  Limits are only raised, never lowered, with room for other users.
    """
    wanted = 2 * hosts * (hosts + 1) + 1024
    raised = {}
    for name, value in (("gc_thresh1", wanted // 4), ("gc_thresh2", wanted // 2), ("gc_thresh3", wanted)):
        path = os.path.join(sysctl_dir, name)
        with open(path) as f:
            old = int(f.read().split()[0])
        if old < value:
            with open(path, "w") as f:
                f.write(f"{value}\n")
            raised[name] = (old, value)
    return raised


def twistd_path() -> str:
    """The twistd beside this interpreter, else the one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("twistd")
    if found is None:
        raise TestbedUnavailable(f"twistd not found beside {sys.executable} or on PATH")
    return found


def child_env(**extra) -> dict:
    """This environment with the checkout holding this package first on PYTHONPATH (nodes run the same code)."""
    env = dict(os.environ, **extra)
    if os.path.exists(os.path.join(_CHECKOUT, "twisted", "plugins", "chaincore_plugin.py")):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_CHECKOUT, env.get("PYTHONPATH")]))
    return env


def ip(*args: str, check: bool = True) -> str:
    """Run `ip args...`; its output, or TestbedError with ip's own one-line complaint."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise TestbedError(f"ip {' '.join(args)}: {done.stderr.strip() or 'exit status %d' % done.returncode}")
    return done.stdout


def netns_pids(netns: str) -> list:
    """The pids of every process in netns (none if it is gone)."""
    return [int(p) for p in ip("netns", "pids", netns, check=False).split()]


def kill_all(pids, sig=signal.SIGKILL, timeout_s: float = 5.0) -> list:
    """Send sig to pids and wait until each is gone (or a zombie); the pids still alive after timeout_s."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if is_alive(p)]
        if alive:
            time.sleep(0.02)
    return alive


def is_alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _start_time(pid: int):
    """The process's start time in clock ticks (guards against a reused pid), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


@dataclass
class Host:
    """One host: its namespace (also its TAP device's name), address, node URL and files."""

    index: int
    netns: str
    address: str
    dir: str
    pid: int = None
    args: list = field(default_factory=list)
    env: dict = field(default_factory=dict)
    process: subprocess.Popen = None

    @property
    def name(self) -> str:
        return f"h{self.index}"

    @property
    def url(self) -> str:
        return f"http://{self.address}:{NODE_PORT}"

    @property
    def datadir(self) -> str:
        return os.path.join(self.dir, "data")

    @property
    def log(self) -> str:
        return os.path.join(self.dir, "node.log")


class Testbed:
    """N hosts on the switch, with one node per host on demand; use as a context manager, or up() and down().

    delay_ms, jitter_ms and loss apply to what every host sends (change one
    host with set_link).  With detach, the switch and nodes outlive this
    process (the CLI's `up`); attach(workdir) takes such a testbed back.
    """

    def __init__(self, hosts: int, workdir: str, *, delay_ms: float = 0, jitter_ms: float = 0, loss: float = 0.0,
                 seed: int = None, prefix: str = PREFIX, mtu: int = 1500, detach: bool = False):
        if not 1 <= hosts <= MAX_HOSTS:
            raise TestbedError(f"a testbed has 1 to {MAX_HOSTS} hosts, not {hosts}")
        if not re.fullmatch(r"[a-z]{1,6}", prefix):
            raise TestbedError(f"prefix must be 1-6 lowercase letters, not {prefix!r}")
        self.workdir = os.path.abspath(workdir)
        self.prefix, self.mtu, self.detach, self.seed = prefix, mtu, detach, seed
        self.link = {"delay_ms": delay_ms, "jitter_ms": jitter_ms, "loss": loss}
        self.run = None
        self.subnet = None
        self.hosts = []
        self.n = hosts
        self.switch_pid = None
        self._switch = None
        self._up = False

    # -- names --------------------------------------------------------------------------

    @property
    def control_path(self) -> str:
        return os.path.join(REGISTRY, f"{self.prefix}{self.run}.sock")

    @property
    def observer_tap(self) -> str:
        return f"{self.prefix}{self.run}o"

    @property
    def observer_address(self) -> str:
        return f"198.18.{self.subnet}.{OBSERVER_HOST}"

    def host(self, which) -> Host:
        """Host by index, by name (`h3`) or the Host itself."""
        if isinstance(which, Host):
            return which
        if isinstance(which, str) and re.fullmatch(r"h?\d+", which):
            which = int(which.lstrip("h"))
        if isinstance(which, int) and 0 <= which < len(self.hosts):
            return self.hosts[which]
        raise TestbedError(f"no host {which!r} (hosts are h0-h{len(self.hosts) - 1})")

    # -- up and down --------------------------------------------------------------------

    def __enter__(self):
        self.up()
        return self

    def __exit__(self, *exc):
        self.down()

    def up(self) -> "Testbed":
        """Make the switch, the namespaces and their addresses; on any failure, undo everything first."""
        reason = unavailable_reason()
        if reason:
            raise TestbedUnavailable(reason)
        os.makedirs(self.workdir, exist_ok=True)
        os.makedirs(REGISTRY, exist_ok=True)
        try:
            with _registry_lock():
                clean_leftovers(self.prefix)
                self.run, self.subnet = _allocate(self.prefix)
                self._record(os.getpid())
            self._up = True
            if not self.detach:
                atexit.register(self.down)
            ensure_neighbour_room(self.n)
            self._start_switch()
            for i in range(self.n):
                self._make_host(i)
            ip("link", "set", self.observer_tap, "mtu", str(self.mtu), "addrgenmode", "none")
            ip("addr", "add", f"{self.observer_address}/24", "dev", self.observer_tap)
            ip("link", "set", self.observer_tap, "up")
            for h in self.hosts:
                self.set_link(h, **self.link)
            self.save()
        except BaseException:
            self.down()
            raise
        return self

    def _start_switch(self) -> None:
        argv = [sys.executable, "-m", "chaincore.testbed.switch", "--control", self.control_path]
        for i in range(self.n):
            argv += ["--port", f"h{i}={self.prefix}{self.run}h{i}"]
        argv += ["--port", f"observer={self.observer_tap}"]
        if self.seed is not None:
            argv += ["--seed", str(self.seed)]
        if not self.detach:
            argv += ["--parent-pid", str(os.getpid())]
        with open(os.path.join(self.workdir, "switch.log"), "ab") as log:
            self._switch = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, env=child_env(),
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        self.switch_pid = self._switch.pid
        # links should not slow down because the hosts keep the CPUs busy: the switch sleeps most of the
        # time, and a real-time priority lets it run the moment a frame is due (the kernel's real-time
        # throttling still keeps a share for everyone else); where that is refused, a high nice level
        try:
            os.sched_setscheduler(self.switch_pid, os.SCHED_FIFO, os.sched_param(1))
        except OSError:
            os.setpriority(os.PRIO_PROCESS, self.switch_pid, -10)
        ready, _, _ = select.select([self._switch.stdout], [], [], 10)
        line = self._switch.stdout.readline() if ready else b""
        self._switch.stdout.close()
        if line.strip() != b"ready":
            tail = _tail(os.path.join(self.workdir, "switch.log"), 1) or "it said nothing"
            raise TestbedError(f"the switch did not start: {tail}")
        self._record(self.switch_pid)

    def _make_host(self, i: int) -> None:
        name = f"{self.prefix}{self.run}h{i}"
        host = Host(i, name, f"198.18.{self.subnet}.{i + 1}", os.path.join(self.workdir, f"h{i}"))
        os.makedirs(host.dir, exist_ok=True)
        self.hosts.append(host)
        ip("netns", "add", name)
        ip("link", "set", name, "netns", name)
        # no IPv6 link-local address: no router solicitations or DAD in the byte counts
        batch = (f"link set lo up\nlink set {name} mtu {self.mtu} addrgenmode none\n"
                 f"addr add {host.address}/24 dev {name}\nlink set {name} up\n")
        done = subprocess.run(["ip", "-n", name, "-batch", "-"], input=batch, capture_output=True, text=True)
        if done.returncode != 0:
            raise TestbedError(f"configuring {name}: {done.stderr.strip()}")

    def down(self) -> list:
        """Remove every process, namespace and device this testbed made; the problems met (best effort, never raises)."""
        if not self._up:
            return []
        self._up = False
        problems = []
        for host in self.hosts:
            pids = netns_pids(host.netns)
            if host.pid and host.pid not in pids and is_alive(host.pid):
                pids.append(host.pid)
            left = kill_all(pids)
            if left:
                problems.append(f"{host.name}: processes {left} survived SIGKILL")
            if host.process is not None:
                host.process.wait()
        if self.switch_pid:
            if kill_all([self.switch_pid], signal.SIGTERM, 5) and kill_all([self.switch_pid]):
                problems.append(f"the switch (pid {self.switch_pid}) survived SIGKILL")
            if self._switch is not None:
                self._switch.wait()
        for host in self.hosts:
            if os.path.exists(f"/run/netns/{host.netns}"):
                try:
                    ip("netns", "del", host.netns)
                except TestbedError as e:
                    problems.append(str(e))
        problems += _remove_devices(self.prefix, self.run)
        for path in (self.control_path, os.path.join(REGISTRY, f"{self.prefix}{self.run}.json")):
            try:
                os.unlink(path)
            except (FileNotFoundError, TypeError):
                pass
        try:
            os.unlink(os.path.join(self.workdir, STATE_FILE))
        except FileNotFoundError:
            pass
        return problems

    def _record(self, owner_pid: int) -> None:
        record = {"owner_pid": owner_pid, "owner_start": _start_time(owner_pid), "subnet": self.subnet,
                  "workdir": self.workdir}
        with open(os.path.join(REGISTRY, f"{self.prefix}{self.run}.json"), "w") as f:
            json.dump(record, f)

    # -- state across processes (the CLI) -----------------------------------------------

    def save(self) -> None:
        """Write the testbed's state to workdir/testbed.json, for attach()."""
        state = {"prefix": self.prefix, "run": self.run, "subnet": self.subnet, "mtu": self.mtu,
                 "switch_pid": self.switch_pid, "link": self.link,
                 "hosts": [{"index": h.index, "pid": h.pid, "args": h.args, "env": h.env} for h in self.hosts]}
        path = os.path.join(self.workdir, STATE_FILE)
        with open(path + ".tmp", "w") as f:
            json.dump(state, f, indent=1)
        os.replace(path + ".tmp", path)

    @classmethod
    def attach(cls, workdir: str) -> "Testbed":
        """The testbed running from workdir (started detached), or TestbedError if there is none."""
        try:
            with open(os.path.join(workdir, STATE_FILE)) as f:
                state = json.load(f)
        except FileNotFoundError:
            raise TestbedError(f"no testbed is running from {workdir}") from None
        bed = cls(len(state["hosts"]), workdir, prefix=state["prefix"], mtu=state["mtu"], detach=True,
                  **state["link"])
        bed.run, bed.subnet, bed.switch_pid = state["run"], state["subnet"], state["switch_pid"]
        for h in state["hosts"]:
            i = h["index"]
            bed.hosts.append(Host(i, f"{bed.prefix}{bed.run}h{i}", f"198.18.{bed.subnet}.{i + 1}",
                                  os.path.join(bed.workdir, f"h{i}"), h["pid"], h["args"], h["env"]))
        bed._up = True
        return bed

    # -- nodes --------------------------------------------------------------------------

    def node_argv(self, which, peers=(), extra=()) -> list:
        """The `twistd chaincore` command line for a host's node: regtest on its address, no port probing."""
        host = self.host(which)
        argv = ["chaincore", "--network", "regtest", "--port", str(NODE_PORT), "--interface", host.address,
                "--advertise", host.url, "--discover-ports", "", "--datadir", host.datadir]
        for peer in peers:
            argv += ["--peer", self.host(peer).url if not str(peer).startswith("http") else peer]
        return argv + list(extra)

    def start_node(self, which, peers=(), extra=(), *, twistd_args=(), env=None) -> Host:
        """Start `twistd -n chaincore` in the host's namespace (output appended to its node.log); the Host.

        peers are hosts (index, name) or URLs given as --peer; extra goes after
        the chaincore options, twistd_args before them (e.g. --logger=...).
        """
        host = self.host(which)
        if host.pid and is_alive(host.pid):
            raise TestbedError(f"{host.name} already runs a node (pid {host.pid})")
        host.args = [*twistd_args, *self.node_argv(host, peers, extra)]
        host.env = dict(env or {})
        self._spawn(host)
        return host

    def _spawn(self, host: Host) -> None:
        argv = ["ip", "netns", "exec", host.netns, twistd_path(), "-n", "--pidfile=", *host.args]
        with open(host.log, "ab") as log:
            host.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            cwd=host.dir, env=child_env(**host.env), start_new_session=True)
        host.pid = host.process.pid            # `ip netns exec` execs the command: this is twistd's pid
        if self.detach:
            self.save()

    def kill(self, which) -> None:
        """SIGKILL every process on the host, as a crash would (its datadir stays)."""
        host = self.host(which)
        pids = netns_pids(host.netns)
        if host.pid and is_alive(host.pid) and host.pid not in pids:
            pids.append(host.pid)
        left = kill_all(pids)
        if host.process is not None:
            host.process.wait()
            host.process = None
        if left:
            raise TestbedError(f"{host.name}: processes {left} survived SIGKILL")

    def restart(self, which) -> Host:
        """Kill the host's node if it still runs, then start it again with the same command line and environment."""
        host = self.host(which)
        if not host.args:
            raise TestbedError(f"{host.name} never ran a node")
        self.kill(host)
        self._spawn(host)
        return host

    def is_running(self, which) -> bool:
        """The host's node process is alive."""
        host = self.host(which)
        if host.process is not None:
            return host.process.poll() is None
        return bool(host.pid) and is_alive(host.pid)

    def status(self, which, timeout_s: float = 2.0):
        """The node's /status as JSON, fetched from the observer; None if it does not answer."""
        try:
            with urllib.request.urlopen(self.host(which).url + "/status", timeout=timeout_s) as answer:
                return json.loads(answer.read())
        except (OSError, ValueError):
            return None

    def wait_ready(self, hosts=None, timeout_s: float = 60.0) -> None:
        """Block until every given host's node (default all that run one) answers /status."""
        hosts = [self.host(h) for h in (hosts if hosts is not None else self.hosts)]
        deadline = time.monotonic() + timeout_s
        for host in hosts:
            while self.status(host, 1) is None:
                if not self.is_running(host):
                    raise TestbedError(f"{host.name}'s node exited: {_tail(host.log, 1)}")
                if time.monotonic() > deadline:
                    raise TestbedError(f"{host.name}'s node did not answer within {timeout_s:.0f} s")
                time.sleep(0.1)

    def run_in(self, which, argv: list, timeout_s: float = 30, **kw) -> subprocess.CompletedProcess:
        """Run argv inside the host's namespace and wait for it (output captured as text)."""
        host = self.host(which)
        return subprocess.run(["ip", "netns", "exec", host.netns, *argv], capture_output=True, text=True,
                              timeout=timeout_s, **kw)

    # -- the switch ---------------------------------------------------------------------

    def control(self, request: dict) -> dict:
        """Send one request to the switch; its answer, or TestbedError with its complaint."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            try:
                s.connect(self.control_path)
                s.sendall(json.dumps(request).encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        break
                    data += chunk
            except OSError as e:
                raise TestbedError(f"the switch does not answer on {self.control_path}: {e}") from None
        answer = json.loads(data)
        if "error" in answer:
            raise TestbedError(f"switch: {answer['error']}")
        return answer

    def set_link(self, which, delay_ms: float = 0, jitter_ms: float = 0, loss: float = 0.0) -> None:
        """What the host's link does to every frame it sends from now on (delay, +- jitter, loss rate)."""
        self.control({"op": "link", "host": self.host(which).name, "delay_ms": delay_ms, "jitter_ms": jitter_ms,
                      "loss": loss})

    def partition(self, *groups) -> None:
        """Split the hosts into groups that cannot reach each other; hosts in no group form one more group."""
        self.control({"op": "partition", "groups": [[self.host(h).name for h in g] for g in groups]})

    def heal(self) -> None:
        """Join every host into one network again."""
        self.control({"op": "heal"})

    def traffic(self) -> Traffic:
        """A snapshot of the switch's counters (subtract two for what happened between them)."""
        return Traffic(self.control({"op": "stats"}))


# -- what other testbeds left ---------------------------------------------------------------


class _registry_lock:
    def __enter__(self):
        self._f = open(os.path.join(REGISTRY, "lock"), "w")
        fcntl.flock(self._f, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        self._f.close()


def _live_runs(prefix: str) -> dict:
    """run -> record of every registered testbed with this prefix whose owner is alive."""
    live = {}
    for entry in os.listdir(REGISTRY):
        m = re.fullmatch(rf"{prefix}([0-9a-f]{{4}})\.json", entry)
        if not m:
            continue
        try:
            with open(os.path.join(REGISTRY, entry)) as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        if record.get("owner_start") is not None and _start_time(record["owner_pid"]) == record["owner_start"]:
            live[m.group(1)] = record
    return live


def clean_leftovers(prefix: str = PREFIX) -> list:
    """Remove the namespaces, devices, processes and records of testbeds with this prefix whose owner died;
    what was removed, as names."""
    os.makedirs(REGISTRY, exist_ok=True)
    live = _live_runs(prefix)
    removed = []
    for line in ip("netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        m = re.fullmatch(rf"{prefix}([0-9a-f]{{4}})h\d+", name)
        if m and m.group(1) not in live:
            kill_all(netns_pids(name))
            ip("netns", "del", name, check=False)
            removed.append(name)
    for run in {m.group(1) for m in re.finditer(rf"\b{prefix}([0-9a-f]{{4}})(?:h\d+|o)\b", ip("-o", "link"))}:
        if run not in live:
            removed += [d for d in _devices(prefix, run)]
            _remove_devices(prefix, run)
    for entry in os.listdir(REGISTRY):
        m = re.fullmatch(rf"{prefix}([0-9a-f]{{4}})\.(json|sock)", entry)
        if m and m.group(1) not in live:
            os.unlink(os.path.join(REGISTRY, entry))
    return removed


def _devices(prefix: str, run: str) -> list:
    return re.findall(rf"^\d+: ({prefix}{run}(?:h\d+|o))[@:]", ip("-o", "link"), re.M)


def _remove_devices(prefix: str, run) -> list:
    if run is None:
        return []
    problems = []
    for dev in _devices(prefix, run):
        try:
            ip("link", "del", dev)
        except TestbedError as e:
            problems.append(str(e))
    return problems


def _allocate(prefix: str) -> tuple:
    """A fresh run id and a 198.18.S.0/24 subnet no live testbed (of any prefix) holds."""
    taken_runs, taken_subnets = set(), set()
    for entry in os.listdir(REGISTRY):
        if entry.endswith(".json"):
            taken_runs.add(entry[:-5])
            try:
                with open(os.path.join(REGISTRY, entry)) as f:
                    taken_subnets.add(json.load(f).get("subnet"))
            except (OSError, ValueError):
                pass
    run = secrets.token_hex(2)
    while prefix + run in taken_runs:
        run = secrets.token_hex(2)
    free = [s for s in range(256) if s not in taken_subnets]
    if not free:
        raise TestbedError("every 198.18.S.0/24 is held by a live testbed")
    return run, free[0]


def _tail(path: str, lines: int = 1) -> str:
    try:
        with open(path, errors="replace") as f:
            return " | ".join(line.strip() for line in f.readlines()[-lines:])
    except FileNotFoundError:
        return ""
