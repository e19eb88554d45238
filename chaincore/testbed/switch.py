"""The testbed's switch: one process holding a TAP file descriptor per host, forwarding Ethernet frames.

The kernels we run on have no netem and no iptables, so everything a link
does to traffic happens here, in user space: MAC learning and flooding (ARP
included), a per-host delay, jitter and loss applied to the frames a host
sends (as netem on its interface would), partitions into groups whose ports
cannot reach each other, and byte counters per host and per pair of hosts,
and, for what hosts deliver to each other, per receiver and kind of traffic:
the HTTP request (`POST /announce`, hashes in paths as `<hash>`) or its
answer a TCP segment carries (told by the request line its connection last
sent to the node port), bare acknowledgements, connection set-up and
tear-down, and ARP.
Frames keep their order on each (sender, receiver) link, even with jitter.

The `observer` port joins the machine itself to the switch: its frames are
never delayed, lost or partitioned, so tests and benchmarks can watch every
host without changing what the hosts see of each other.

Control: a Unix stream socket taking one JSON object per line and answering
one per line (`link`, `partition`, `heal`, `stats`, `quit`).  Run as

    python -m chaincore.testbed.switch --control PATH --port h0=TAP0 --port observer=TAPO ...

It creates the TAP devices itself (non-persistent, so they vanish when it
exits), prints `ready` once it listens, and ends on SIGTERM, on `quit`, or
when --parent-pid is given and that process is gone.
"""

import argparse
import asyncio
import collections
import fcntl
import json
import os
import random
import signal
import struct
import sys
import time

OBSERVER = "observer"
_TUNSETIFF = 0x400454CA
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000
_MAX_FRAME = 65536
_READ_BURST = 64
NODE_PORT = 5000                                 # the nodes' HTTP port: segments to it are requests
_MAX_FLOWS = 100_000
_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ")


def _path_kind(path: bytes) -> str:
    """A request path as a kind of traffic: no query, 64-hex-digit parts (hashes) as <hash>."""
    parts = path.split(b"?", 1)[0].decode("ascii", "replace").split("/")
    return "/".join("<hash>" if len(p) == 64 else p for p in parts)


class Kinds:
    """Bytes delivered between hosts per (receiver, kind), the kind read from the frame's TCP segment."""

    def __init__(self):
        self.bytes = collections.Counter()           # (receiver, kind) -> bytes
        self.frames = collections.Counter()
        self._flows = collections.OrderedDict()      # (client ip, client port, server ip) -> last request line kind

    def count(self, receiver: str, frame: bytes) -> None:
        kind = self.kind(frame)
        self.bytes[(receiver, kind)] += len(frame)
        self.frames[(receiver, kind)] += 1

    def kind(self, frame: bytes) -> str:
        if frame[12:14] == b"\x08\x06":
            return "arp"
        if frame[12:14] != b"\x08\x00" or len(frame) < 34 or frame[23] != 6:
            return "other"
        ihl = (frame[14] & 0x0F) * 4
        total = int.from_bytes(frame[16:18], "big")
        tcp = 14 + ihl
        if len(frame) < tcp + 20:
            return "other"
        sport, dport = int.from_bytes(frame[tcp:tcp + 2], "big"), int.from_bytes(frame[tcp + 2:tcp + 4], "big")
        flags = frame[tcp + 13]
        payload = frame[tcp + (frame[tcp + 12] >> 4) * 4:14 + total]
        if not payload:
            return "tcp syn/fin/rst" if flags & 0x07 else "tcp ack"
        src, dst = frame[26:30], frame[30:34]
        if dport == NODE_PORT:
            flow = (src, sport, dst)
            if payload.startswith(_METHODS):
                method, _, rest = payload.partition(b" ")
                self._flows[flow] = f"{method.decode()} {_path_kind(rest.split(b' ', 1)[0])}"
                self._flows.move_to_end(flow)
                while len(self._flows) > _MAX_FLOWS:
                    self._flows.popitem(last=False)
            return self._flows.get(flow, "request ?")
        if sport == NODE_PORT:
            return self._flows.get((dst, dport, src), "?") + " answer"
        return "other tcp"


def open_tap(name: str) -> int:
    """A non-blocking file descriptor for a new TAP device called name (no packet-info header)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TAP | _IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


class Port:
    """One host's attachment: its TAP descriptor, what its link does to what it sends, and its counters."""

    def __init__(self, name: str, fd: int):
        self.name, self.fd = name, fd
        self.delay_s, self.jitter_s, self.loss = 0.0, 0.0, 0.0
        self.group = 0
        self.counters = dict.fromkeys(("sent_frames", "sent_bytes", "received_frames", "received_bytes",
                                       "lost_frames", "blocked_frames", "write_errors"), 0)

    @property
    def is_observer(self) -> bool:
        return self.name == OBSERVER


class Switch:
    """MAC learning, per-link delay queues and partitions over a set of Ports, on an asyncio loop."""

    def __init__(self, ports: list, loop, rng: random.Random):
        self.ports = {p.name: p for p in ports}
        self.loop, self.rng = loop, rng
        self.macs = {}                                   # MAC -> Port, learnt from source addresses
        self.pair_bytes = collections.Counter()          # (sender, receiver) -> bytes delivered
        self.kinds = Kinds()                             # what hosts delivered to each other, by kind
        self._queues = {}                                # (sender, receiver) -> deque of frames in flight
        self._last_due = {}                              # (sender, receiver) -> delivery time of the last queued frame
        self.late_s_max, self.late_s_sum, self.late_n = 0.0, 0.0, 0   # how far behind due delayed frames went out

    def start(self) -> None:
        for port in self.ports.values():
            self.loop.add_reader(port.fd, self._readable, port)

    def stop(self) -> None:
        for port in self.ports.values():
            self.loop.remove_reader(port.fd)
            os.close(port.fd)

    # -- forwarding ---------------------------------------------------------------------

    def _readable(self, port: Port) -> None:
        for _ in range(_READ_BURST):
            try:
                frame = os.read(port.fd, _MAX_FRAME)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return                                   # the device's namespace is going away
            self.forward(port, frame)

    def forward(self, source: Port, frame: bytes) -> None:
        """Send frame from source to the port its destination MAC was learnt on, or to every other port."""
        if len(frame) < 14:
            return
        source.counters["sent_frames"] += 1
        source.counters["sent_bytes"] += len(frame)
        dst, src = frame[0:6], frame[6:12]
        if not src[0] & 1:
            self.macs[src] = source
        known = None if dst[0] & 1 else self.macs.get(dst)
        targets = [known] if known is not None else [p for p in self.ports.values() if p is not source]
        if known is source:
            return
        # lost on the sender's link, once for all copies; the observer's view is never lossy
        lost = bool(source.loss) and not source.is_observer and self.rng.random() < source.loss
        for target in targets:
            if lost and not target.is_observer:
                source.counters["lost_frames"] += 1
                continue
            if not (source.is_observer or target.is_observer) and source.group != target.group:
                source.counters["blocked_frames"] += 1
                continue
            self._schedule(source, target, frame)

    def _schedule(self, source: Port, target: Port, frame: bytes) -> None:
        if source.is_observer or target.is_observer or not (source.delay_s or source.jitter_s):
            self._deliver(source, target, frame)
            return
        now = self.loop.time()
        delay = max(0.0, source.delay_s + self.rng.uniform(-source.jitter_s, source.jitter_s))
        key = (source.name, target.name)
        # jitter never reorders a link: a frame is not delivered before the one sent ahead of it
        due = max(now + delay, self._last_due.get(key, 0.0))
        self._last_due[key] = due
        self._queues.setdefault(key, collections.deque()).append((due, frame))
        self.loop.call_at(due, self._deliver_head, source, target, key)

    def _deliver_head(self, source: Port, target: Port, key) -> None:
        due, frame = self._queues[key].popleft()
        late = max(0.0, self.loop.time() - due)
        self.late_s_max, self.late_s_sum, self.late_n = max(self.late_s_max, late), self.late_s_sum + late, self.late_n + 1
        self._deliver(source, target, frame)

    def _deliver(self, source: Port, target: Port, frame: bytes) -> None:
        try:
            os.write(target.fd, frame)
        except OSError:
            target.counters["write_errors"] += 1
            return
        target.counters["received_frames"] += 1
        target.counters["received_bytes"] += len(frame)
        self.pair_bytes[(source.name, target.name)] += len(frame)
        if not (source.is_observer or target.is_observer):
            self.kinds.count(target.name, frame)

    # -- control ------------------------------------------------------------------------

    def command(self, request: dict) -> dict:
        """Carry out one control request; the answer (`{"error": ...}` for a bad one)."""
        op = request.get("op")
        if op == "link":
            port = self.ports.get(request.get("host"))
            if port is None or port.is_observer:
                return {"error": f"no host {request.get('host')!r}"}
            delay_ms, jitter_ms, loss = (request.get(k, 0) for k in ("delay_ms", "jitter_ms", "loss"))
            if not all(isinstance(v, (int, float)) and v >= 0 for v in (delay_ms, jitter_ms, loss)) or loss > 1:
                return {"error": "delay_ms and jitter_ms must be >= 0, loss within 0..1"}
            port.delay_s, port.jitter_s, port.loss = delay_ms / 1000, jitter_ms / 1000, float(loss)
            return {"ok": True}
        if op == "partition":
            groups = request.get("groups")
            if not isinstance(groups, list) or not all(isinstance(g, list) for g in groups):
                return {"error": "groups must be a list of lists of host names"}
            named = [name for g in groups for name in g]
            unknown = [n for n in named if n not in self.ports or n == OBSERVER]
            if unknown or len(set(named)) != len(named):
                return {"error": f"unknown or repeated hosts in groups: {sorted(set(unknown)) or named}"}
            rest = len(groups) + 1                        # hosts named in no group share one more group
            for port in self.ports.values():
                port.group = rest
            for number, group in enumerate(groups, 1):
                for name in group:
                    self.ports[name].group = number
            return {"ok": True}
        if op == "heal":
            for port in self.ports.values():
                port.group = 0
            return {"ok": True}
        if op == "stats":
            # a busy machine makes the switch late: cpu_s and lateness tell whether it kept up
            return {"time": self.loop.time(), "cpu_s": time.process_time(),
                    "late_ms": {"max": self.late_s_max * 1000, "sum": self.late_s_sum * 1000, "frames": self.late_n},
                    "hosts": {p.name: dict(p.counters, delay_ms=p.delay_s * 1000, jitter_ms=p.jitter_s * 1000,
                                           loss=p.loss, group=p.group) for p in self.ports.values()},
                    "pairs": [[s, r, n] for (s, r), n in sorted(self.pair_bytes.items())],
                    "kinds": [[r, k, n, self.kinds.frames[(r, k)]] for (r, k), n in sorted(self.kinds.bytes.items())]}
        return {"error": f"unknown op {op!r}"}


async def _serve_control(switch: Switch, path: str, done: asyncio.Event):
    async def client(reader, writer):
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("not an object")
                except ValueError as e:
                    answer = {"error": f"bad request: {e}"}
                else:
                    answer = {"ok": True} if request.get("op") == "quit" else switch.command(request)
                    if request.get("op") == "quit":
                        done.set()
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return await asyncio.start_unix_server(client, path=path)


async def _watch_parent(parent_pid: int, done: asyncio.Event):
    while not done.is_set():
        if os.getppid() != parent_pid:
            done.set()
        await asyncio.sleep(0.5)


async def run(args) -> None:
    loop = asyncio.get_running_loop()
    ports = []
    try:
        for spec in args.port:
            name, _, tap = spec.partition("=")
            ports.append(Port(name, open_tap(tap)))
    except OSError as e:
        for p in ports:
            os.close(p.fd)
        raise SystemExit(f"testbed switch: cannot open TAP device {tap}: {e.strerror}")
    switch = Switch(ports, loop, random.Random(args.seed))
    switch.start()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, done.set)
    server = await _serve_control(switch, args.control, done)
    watcher = loop.create_task(_watch_parent(args.parent_pid, done)) if args.parent_pid else None
    print("ready", flush=True)
    try:
        await done.wait()
    finally:
        server.close()
        if watcher:
            watcher.cancel()
        switch.stop()
        try:
            os.unlink(args.control)
        except FileNotFoundError:
            pass


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m chaincore.testbed.switch", description=__doc__.split("\n")[0])
    parser.add_argument("--control", required=True, help="path of the control socket")
    parser.add_argument("--port", action="append", default=[], help="NAME=TAPDEVICE (repeatable)")
    parser.add_argument("--seed", type=int, default=None, help="seed for loss and jitter")
    parser.add_argument("--parent-pid", type=int, default=0, help="exit when this process is no longer our parent")
    args = parser.parse_args(argv)
    asyncio.run(run(args))


if __name__ == "__main__":
    main(sys.argv[1:])
