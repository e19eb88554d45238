"""The testbed on this machine: the switch's delay, loss and partitions, and real nodes on five hosts.

These tests make network namespaces and TAP devices, so they need root and
`ip`; elsewhere they skip with the one line `unavailable_reason()` gives.
Traffic is measured between namespaces with small Python programs run by
`ip netns exec`; nodes are watched over HTTP from the machine itself (the
switch's observer port).  Every test ends by checking that nothing the
testbed made is left.
"""

import asyncio
import json
import os
import random
import socket
import subprocess
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from chaincore.core.jsonview import block_to_json, parse_block
from chaincore.testbed import Testbed, TestbedUnavailable, clean_leftovers, unavailable_reason
from chaincore.testbed.bed import REGISTRY, ip, is_alive, twistd_path
from chaincore.testbed.switch import Kinds, Port, Switch
from chaincore.testbed.traffic import Traffic

from ..support.builders import ALICE, solve
from ..support.processes import node_http_client
from ..support.waiting import wait_until

REASON = unavailable_reason()

ECHO_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], 7000)); s.listen()
print("ready", flush=True)
while True:
    c, _ = s.accept()
    while data := c.recv(100):
        c.sendall(data)
    c.close()
"""

ECHO_CLIENT = """
import json, socket, statistics, sys, time
t = time.monotonic()
try:
    s = socket.create_connection((sys.argv[1], 7000), timeout=float(sys.argv[2]))
except OSError as e:
    print(json.dumps({"error": str(e)})); sys.exit()
connect = time.monotonic() - t
rtts = []
for _ in range(int(sys.argv[3])):
    t = time.monotonic(); s.sendall(b"x"); s.recv(10); rtts.append(time.monotonic() - t)
print(json.dumps({"connect_s": connect, "rtt_s": statistics.median(rtts) if rtts else None}))
"""

UDP_RECEIVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 7001)); s.settimeout(10)
print("ready", flush=True)
s.recv(100)                         # the warm-up datagram, sent before any loss is set
print("warm", flush=True)
n = 0
try:
    s.recv(100); n = 1; s.settimeout(1)
    while True:
        s.recv(100); n += 1
except socket.timeout:
    pass
print(n, flush=True)
"""

UDP_SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[2])):
    s.sendto(b"x" * 20, (sys.argv[1], 7001)); time.sleep(0.0005)
"""


def _python_in(bed, host, program, *args):
    """A Python program started in host's namespace, its stdout a pipe."""
    return subprocess.Popen(["ip", "netns", "exec", bed.host(host).netns, sys.executable, "-c", program, *args],
                            stdout=subprocess.PIPE, text=True)


class _BedMixin:
    """Starts a testbed in each test and checks, after it is down, that nothing of it remains."""

    hosts = 2
    link = {}

    def make_bed(self) -> Testbed:
        if REASON:
            raise SkipTest(REASON)
        bed = Testbed(self.hosts, self.mktemp(), seed=17, **self.link)
        bed.up()
        self.addCleanup(self.assert_removed, bed)
        self.addCleanup(bed.down)
        return bed

    def assert_removed(self, bed: Testbed) -> None:
        """No namespace, device, process or record of bed is left."""
        tag = f"{bed.prefix}{bed.run}"
        self.assertNotIn(tag, ip("netns", "list"))
        self.assertNotIn(tag, ip("-o", "link"))
        for host in bed.hosts:
            self.assertFalse(bed.is_running(host), host.name)
        self.assertFalse(is_alive(bed.switch_pid), "the switch still runs")
        self.assertFalse([e for e in os.listdir(REGISTRY) if e.startswith(tag)])


class AvailabilityTests(SynchronousTestCase):
    def test_reason_names_what_is_missing(self):
        """Without root, or without `ip`, the testbed says so in one line."""
        self.assertIn("root", unavailable_reason(uid=1000))
        self.assertIn("`ip`", unavailable_reason(uid=0, which=lambda name: None))
        self.assertIn("/nonexistent/tun", unavailable_reason(uid=0, which=lambda n: "/x", tun="/nonexistent/tun"))
        for reason in (unavailable_reason(uid=1000), unavailable_reason(uid=0, which=lambda name: None)):
            self.assertNotIn("\n", reason)

    def test_up_refuses_with_that_line(self):
        """Testbed.up raises TestbedUnavailable carrying the reason where the testbed cannot run."""
        if not REASON:
            raise SkipTest("this machine can run the testbed")
        exc = self.assertRaises(TestbedUnavailable, Testbed(2, self.mktemp()).up)
        self.assertEqual(str(exc), REASON)


def _mac(n: int) -> bytes:
    return bytes([2, 0, 0, 0, 0, n])


def _frame(src: int, dst, payload: bytes = b"") -> bytes:
    """An Ethernet frame from _mac(src) to _mac(dst), or to broadcast when dst is None."""
    return (b"\xff" * 6 if dst is None else _mac(dst)) + _mac(src) + b"\x08\x00" + payload.ljust(46, b".")


def _tcp(src: int, sport: int, dst: int, dport: int, payload: bytes = b"", flags: int = 0x10) -> bytes:
    """An Ethernet frame holding an IPv4 TCP segment from 198.18.0.<src+1>:sport to 198.18.0.<dst+1>:dport."""
    tcp = sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + bytes(8) + bytes([5 << 4, flags]) + bytes(6)
    ip_header = (bytes([0x45, 0]) + (20 + len(tcp) + len(payload)).to_bytes(2, "big") + bytes(5) + b"\x06"
                 + bytes(2) + bytes([198, 18, 0, src + 1, 198, 18, 0, dst + 1]))
    return _mac(dst) + _mac(src) + b"\x08\x00" + ip_header + tcp + payload


class NeighbourRoomTests(SynchronousTestCase):
    def test_arp_limits_are_raised_for_large_testbeds_and_never_lowered(self):
        """50 hosts need room for 2,550 ARP entries: limits under what they need are raised, larger ones kept."""
        from chaincore.testbed.bed import ensure_neighbour_room
        folder = self.mktemp()
        os.makedirs(folder)
        for name, value in (("gc_thresh1", 128), ("gc_thresh2", 512), ("gc_thresh3", 100_000)):
            with open(os.path.join(folder, name), "w") as f:
                f.write(f"{value}\n")
        raised = ensure_neighbour_room(50, folder)
        self.assertEqual(raised, {"gc_thresh1": (128, 1531), "gc_thresh2": (512, 3062)})
        with open(os.path.join(folder, "gc_thresh3")) as f:
            self.assertEqual(f.read().strip(), "100000")
        self.assertEqual(ensure_neighbour_room(5, folder), {})


class KindTests(SynchronousTestCase):
    """What the switch tells of each frame hosts deliver each other: request, answer, acknowledgement, ARP."""

    def test_segments_are_counted_by_the_request_their_connection_carries(self):
        """A request's segments count under its method and path (hashes as <hash>), the answer's under the same
        with " answer", bare acknowledgements, set-up and ARP apart; a difference of snapshots subtracts them."""
        kinds = Kinds()
        block_hash = "ab" * 32
        frames = [(1, _tcp(0, 40000, 1, 5000, flags=0x02)),
                  (1, _tcp(0, 40000, 1, 5000, b"POST /announce HTTP/1.1\r\nHost: x\r\n\r\n")),
                  (1, _tcp(0, 40000, 1, 5000, b"header bytes in a second segment")),
                  (0, _tcp(1, 5000, 0, 40000, b"HTTP/1.1 204 No Content\r\n\r\n")),
                  (1, _tcp(0, 40000, 1, 5000)),
                  (1, _tcp(0, 40000, 1, 5000, f"GET /compact/{block_hash}?x=1 HTTP/1.1\r\n\r\n".encode())),
                  (0, _tcp(1, 5000, 0, 40000, b"HTTP/1.1 200 OK\r\n\r\ncompact bytes")),
                  (1, b"\xff" * 6 + _mac(0) + b"\x08\x06" + bytes(28))]
        for receiver, frame in frames:
            kinds.count(f"h{receiver}", frame)
        stats = {"time": 1.0, "cpu_s": 0, "late_ms": {"max": 0, "sum": 0, "frames": 0}, "hosts": {}, "pairs": [],
                 "kinds": [[r, k, n, kinds.frames[(r, k)]] for (r, k), n in kinds.bytes.items()]}
        traffic = Traffic(stats)
        by_kind = traffic.received_by_kind(["h1"])
        self.assertEqual(sorted(by_kind), ["GET /compact/<hash>", "POST /announce", "arp", "tcp ack",
                                           "tcp syn/fin/rst"])
        self.assertEqual(by_kind["POST /announce"][1], 2)
        self.assertEqual(by_kind["POST /announce"][0], len(frames[1][1]) + len(frames[2][1]))
        self.assertEqual(sorted(traffic.received_by_kind(["h0"])), ["GET /compact/<hash> answer", "POST /announce answer"])
        empty = Traffic(dict(stats, kinds=[]))
        self.assertEqual((traffic - traffic).received_by_kind(), {})
        self.assertEqual((traffic - empty).received_by_kind(), traffic.received_by_kind())



class SwitchLogicTests(SynchronousTestCase):
    """The switch's forwarding over socket pairs standing in for TAP devices (no root needed)."""

    def setUp(self):
        self.loop = asyncio.new_event_loop()
        self.addCleanup(self.loop.close)
        self.wires = {}
        ports = []
        for name in ("h0", "h1", "h2", "observer"):
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            theirs.setblocking(False)
            self.addCleanup(ours.close)
            self.wires[name] = ours
            ports.append(Port(name, theirs.detach()))
        self.switch = Switch(ports, self.loop, random.Random(5))
        self.switch.start()
        self.addCleanup(self.switch.stop)

    def send(self, name: str, frame: bytes) -> None:
        self.wires[name].send(frame)

    def settle(self, seconds: float = 0.01) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def frames_at(self, name: str) -> list:
        wire, frames = self.wires[name], []
        wire.setblocking(False)
        while True:
            try:
                frames.append(wire.recv(2048))
            except BlockingIOError:
                return frames

    def test_unknown_destinations_flood_and_learnt_ones_do_not(self):
        """A frame to an unlearnt MAC reaches every other port; once its owner has spoken, only that port."""
        self.send("h0", _frame(0, None))
        self.settle()
        self.assertEqual([len(self.frames_at(n)) for n in ("h0", "h1", "h2", "observer")], [0, 1, 1, 1])
        self.send("h1", _frame(1, 0, b"answer"))
        self.settle()
        self.assertEqual([len(self.frames_at(n)) for n in ("h0", "h1", "h2", "observer")], [1, 0, 0, 0])
        self.assertEqual(self.switch.pair_bytes[("h1", "h0")], 60)

    def test_partitions_block_hosts_but_not_the_observer(self):
        """Across groups nothing passes; the observer still reaches and hears every host; heal joins them."""
        self.assertEqual(self.switch.command({"op": "partition", "groups": [["h0"], ["h1"]]}), {"ok": True})
        self.send("h0", _frame(0, None))
        self.settle()
        self.assertEqual([len(self.frames_at(n)) for n in ("h1", "h2", "observer")], [0, 0, 1])
        self.assertEqual(self.switch.ports["h0"].counters["blocked_frames"], 2)
        self.switch.command({"op": "heal"})
        self.send("h0", _frame(0, None))
        self.settle()
        self.assertEqual([len(self.frames_at(n)) for n in ("h1", "h2")], [1, 1])

    def test_jitter_delays_but_never_reorders_a_link(self):
        """With 20 +- 15 ms, frames arrive no sooner than 5 ms and in the order sent."""
        self.switch.command({"op": "link", "host": "h0", "delay_ms": 20, "jitter_ms": 15})
        self.send("h1", _frame(1, None))                          # learn h1's MAC
        self.settle()
        for i in range(50):
            self.send("h0", _frame(0, 1, b"%03d" % i))
        self.settle(0)                                            # read and queued, none due yet
        self.assertEqual(self.switch.ports["h0"].counters["sent_frames"], 50)
        self.assertEqual(self.frames_at("h1"), [])
        self.settle(0.05)
        got = [f[14:17] for f in self.frames_at("h1")]
        self.assertEqual(got, [b"%03d" % i for i in range(50)])

    def test_loss_drops_at_its_rate_and_counts(self):
        """With loss 0.5 about half of 400 frames pass, and every drop is counted."""
        self.switch.command({"op": "link", "host": "h0", "loss": 0.5})
        self.send("h1", _frame(1, None))
        self.settle()
        for i in range(400):
            self.send("h0", _frame(0, 1))
            if i % 50 == 49:
                self.settle(0.001)
        self.settle()
        passed, lost = len(self.frames_at("h1")), self.switch.ports["h0"].counters["lost_frames"]
        self.assertEqual(passed + lost, 400)
        self.assertTrue(150 <= passed <= 250, passed)

    def test_bad_control_requests_are_refused(self):
        """Unknown hosts, negative delays, loss over 1 and unknown ops get an error, and change nothing."""
        for request in ({"op": "link", "host": "h9"}, {"op": "link", "host": "h0", "delay_ms": -1},
                        {"op": "link", "host": "h0", "loss": 2}, {"op": "partition", "groups": [["h0"], ["h0"]]},
                        {"op": "partition", "groups": "h0"}, {"op": "fly"}):
            self.assertIn("error", self.switch.command(request), request)
        self.assertEqual(self.switch.ports["h0"].delay_s, 0)
        self.assertEqual({p.group for p in self.switch.ports.values()}, {0})


class SwitchTests(_BedMixin, SynchronousTestCase):
    hosts = 2

    def echo_server(self, bed, host=1):
        server = _python_in(bed, host, ECHO_SERVER, bed.host(host).address)
        self.addCleanup(server.wait)
        self.addCleanup(server.kill)
        self.assertEqual(server.stdout.readline().strip(), "ready")
        return server

    def echo(self, bed, timeout_s=2.0, echoes=10) -> dict:
        done = bed.run_in(0, [sys.executable, "-c", ECHO_CLIENT, bed.host(1).address, str(timeout_s), str(echoes)])
        return json.loads(done.stdout)

    def test_round_trip_is_twice_the_delay(self):
        """With 25 ms on each host's link, a TCP echo between two namespaces takes about 50 ms."""
        bed = self.make_bed()
        for h in bed.hosts:
            bed.set_link(h, delay_ms=25)
        self.echo_server(bed)
        answer = self.echo(bed)
        self.assertGreaterEqual(answer["rtt_s"], 0.050)
        self.assertLess(answer["rtt_s"], 0.075)  # a loaded machine adds a few ms
        traffic = bed.traffic()
        self.assertGreater(traffic.received_from_hosts("h1"), 0)
        self.assertEqual(traffic.pairs[("h0", "h1")], traffic.received_from_hosts("h1"))

    def test_loss_drops_frames_at_its_rate(self):
        """With 30 % loss on the sender's link, about 70 % of 1000 datagrams arrive, and the switch counts the rest."""
        bed = self.make_bed()
        receiver = _python_in(bed, 1, UDP_RECEIVER, bed.host(1).address)
        self.addCleanup(receiver.wait)
        self.addCleanup(receiver.kill)
        self.assertEqual(receiver.stdout.readline().strip(), "ready")
        bed.run_in(0, [sys.executable, "-c", UDP_SENDER, bed.host(1).address, "1"])
        self.assertEqual(receiver.stdout.readline().strip(), "warm")
        bed.set_link(0, loss=0.3)
        before = bed.traffic()
        bed.run_in(0, [sys.executable, "-c", UDP_SENDER, bed.host(1).address, "1000"])
        arrived = int(receiver.stdout.readline())
        lost = (bed.traffic() - before).hosts["h0"]["lost_frames"]
        self.assertTrue(620 <= arrived <= 780, f"{arrived} of 1000 arrived")
        self.assertTrue(220 <= lost <= 380, f"{lost} lost")

    def test_partition_blocks_and_heal_restores(self):
        """Hosts in different groups cannot connect; after heal they can again."""
        bed = self.make_bed()
        self.echo_server(bed)
        self.assertIsNotNone(self.echo(bed, echoes=1)["rtt_s"])
        bed.partition([0], [1])
        self.assertIn("error", self.echo(bed, timeout_s=0.5, echoes=1))
        self.assertGreater(bed.traffic().hosts["h0"]["blocked_frames"], 0)
        bed.heal()
        self.assertIsNotNone(self.echo(bed, echoes=1)["rtt_s"])


class CleanupTests(_BedMixin, SynchronousTestCase):
    def test_down_removes_everything(self):
        """After down, the namespaces, devices, the switch and a process left running in a host are gone."""
        bed = self.make_bed()
        sleeper = subprocess.Popen(["ip", "netns", "exec", bed.hosts[0].netns, "sleep", "60"])
        self.addCleanup(sleeper.wait)
        self.assertIn(bed.hosts[1].netns, ip("netns", "list"))
        self.assertEqual(bed.down(), [])
        self.assertEqual(sleeper.wait(timeout=5), -9)
        self.assert_removed(bed)

    def test_leftovers_of_a_dead_testbed_are_removed(self):
        """A namespace, a TAP device and a record of a testbed whose owner died are removed by the next start."""
        if REASON:
            raise SkipTest(REASON)
        dead = subprocess.Popen(["true"])
        dead.wait()
        os.makedirs(REGISTRY, exist_ok=True)
        with open(os.path.join(REGISTRY, "cctbdeadh.json"), "w"):
            pass                                          # not a record of ours: left alone
        self.addCleanup(os.unlink, os.path.join(REGISTRY, "cctbdeadh.json"))
        with open(os.path.join(REGISTRY, "cctbdead.json"), "w") as f:
            json.dump({"owner_pid": dead.pid, "owner_start": 1, "subnet": 250}, f)
        ip("netns", "add", "cctbdeadh0")
        ip("tuntap", "add", "dev", "cctbdeado", "mode", "tap")
        self.addCleanup(ip, "netns", "del", "cctbdeadh0", check=False)
        self.addCleanup(ip, "link", "del", "cctbdeado", check=False)
        removed = clean_leftovers()
        self.assertIn("cctbdeadh0", removed)
        self.assertIn("cctbdeado", removed)
        self.assertNotIn("cctbdead", ip("netns", "list") + ip("-o", "link"))
        self.assertFalse(os.path.exists(os.path.join(REGISTRY, "cctbdead.json")))
        self.assertTrue(os.path.exists(os.path.join(REGISTRY, "cctbdeadh.json")))


class NodeTests(_BedMixin, TestCase):
    hosts = 5
    link = {"delay_ms": 40, "jitter_ms": 10}
    timeout = 90

    def setUp(self):
        if REASON:
            raise SkipTest(REASON)
        try:
            twistd_path()
        except TestbedUnavailable as e:
            raise SkipTest(str(e))
        self.http = node_http_client(self)

    async def get_json(self, url: str):
        response = await self.http.get(url, timeout=5)
        return await response.json()

    async def answers(self, url: str, path: str = "/status"):
        try:
            return await self.get_json(url + path)
        except Exception:
            return None

    async def mine_on(self, host) -> str:
        """A block from host's template, solved here and submitted to host; its hash."""
        template = await self.get_json(f"{host.url}/mining/template?address={ALICE.address}")
        block = parse_block(template["block"])
        block = block.with_nonce(solve(block.header).nonce)
        response = await self.http.post(host.url + "/submit_block", json={"block": block_to_json(block)}, timeout=5)
        self.assertEqual((await response.json())["status"], "accepted")
        return block.hash.hex()

    async def tips(self, hosts) -> list:
        return [(await self.answers(h.url) or {}).get("tip_hash") for h in hosts]

    async def test_hosts_find_each_other_and_a_killed_host_rejoins(self):
        """Five hosts at 40 +- 10 ms, each seeded with one other, all peer with each other by exchange;
        a host killed with SIGKILL and restarted catches up to the same tip."""
        bed = self.make_bed()
        for i in range(self.hosts):
            bed.start_node(i, peers=[(i + 1) % self.hosts])
        urls = {h.url for h in bed.hosts}

        async def everyone_peers():
            for h in bed.hosts:
                peers = await self.answers(h.url, "/peers")
                if not peers or set(peers["active_peers"]) != urls - {h.url}:
                    return False
            return True

        await wait_until(everyone_peers, timeout_s=40, interval_s=0.5, what="every host peering with all others")
        for h in bed.hosts:
            listed = (await self.get_json(h.url + "/peers"))["peers"]
            self.assertFalse([u for u in listed if "localhost" in u or "127.0.0.1" in u], listed)

        first = bed.hosts[0]
        for _ in range(2):
            tip = await self.mine_on(first)
        await wait_until(lambda: _all_equal(self.tips(bed.hosts), tip),
                         timeout_s=15, interval_s=0.2, what="every host at the first tip")

        victim = bed.hosts[3]
        bed.kill(victim)
        self.assertFalse(bed.is_running(victim))
        for _ in range(2):
            tip = await self.mine_on(first)
        bed.restart(victim)
        await wait_until(lambda: _all_equal(self.tips([victim]), tip), timeout_s=30, interval_s=0.3,
                         what="the restarted host at the new tip")


async def _all_equal(tips_coroutine, tip) -> bool:
    return set(await tips_coroutine) == {tip}


class MeshTests(_BedMixin, TestCase):
    """Ten hosts at 40 +- 10 ms with 1 % loss: discovery by exchange, partitions that heal, and no loopback
    URL ever handed to another host."""

    hosts = 10
    link = {"delay_ms": 40, "jitter_ms": 10, "loss": 0.01}
    timeout = 240
    setUp, get_json, answers, mine_on, tips = (NodeTests.setUp, NodeTests.get_json, NodeTests.answers,
                                               NodeTests.mine_on, NodeTests.tips)

    async def everyone_knows_everyone(self, bed) -> bool:
        urls = {h.url for h in bed.hosts}
        for h in bed.hosts:
            peers = await self.answers(h.url, "/peers")
            if not peers or not set(peers["peers"]) >= urls - {h.url}:
                return False
        return True

    async def test_hosts_find_each_other_and_a_partition_heals(self):
        """Each host seeded with one other finds all nine by peer exchange and lists no loopback URL; a
        partition into two mining groups heals to the heavier tip with the losing branch's transaction back
        in its group's mempools; a killed host rejoins at the same tip."""
        from chaincore.core.jsonview import tx_to_json
        from chaincore.core.tx import OutPoint
        from ..support.builders import BOB, signed_tx

        bed = self.make_bed()
        for i in range(self.hosts):  # the observer mines 101 blocks from another host: it gets a miner's budget
            bed.start_node(i, peers=[(i + 1) % self.hosts], extra=["--stranger-budget", "2000/500"])
        await wait_until(lambda: self.everyone_knows_everyone(bed), timeout_s=60, interval_s=0.5,
                         what="every host knowing all others")
        for h in bed.hosts:
            answer = await self.get_json(h.url + "/peers")
            listed = answer["peers"] + answer["active_peers"]
            self.assertFalse([u for u in listed if "localhost" in u or "127.0.0.1" in u], listed)

        first, other = bed.hosts[0], bed.hosts[5]
        coinbases = []
        for _ in range(101):  # one coinbase matures
            template = await self.get_json(f"{first.url}/mining/template?address={ALICE.address}")
            block = parse_block(template["block"])
            block = block.with_nonce(solve(block.header).nonce)
            coinbases.append(block.transactions[0])
            response = await self.http.post(first.url + "/submit_block", json={"block": block_to_json(block)},
                                            timeout=5)
            self.assertEqual((await response.json())["status"], "accepted")
        tip = block.hash.hex()
        await wait_until(lambda: _all_equal(self.tips(bed.hosts), tip), timeout_s=180, interval_s=0.5,
                         what="every host at the funded tip")

        group_a, group_b = bed.hosts[:5], bed.hosts[5:]
        bed.partition(group_a, group_b)
        coinbase = coinbases[0]
        tx = signed_tx([(OutPoint(coinbase.tx_id, 0), ALICE)], [(BOB, coinbase.output_total - 100_000)])
        response = await self.http.post(other.url + "/add_transaction", json={"transaction": tx_to_json(tx)},
                                        timeout=5)
        self.assertEqual((await response.json())["status"], "accepted")
        losing = await self.mine_on(other)
        await wait_until(lambda: _all_equal(self.tips(group_b), losing), timeout_s=20, interval_s=0.3,
                         what="group B on its own tip")
        for _ in range(2):
            winning = await self.mine_on(first)
        await wait_until(lambda: _all_equal(self.tips(group_a), winning), timeout_s=20, interval_s=0.3,
                         what="group A on its own tip")
        bed.heal()
        await wait_until(lambda: _all_equal(self.tips(bed.hosts), winning), timeout_s=90, interval_s=0.5,
                         what="every host on the heavier tip after the heal")

        async def back_in_mempools():
            for h in group_b:
                found = await self.answers(h.url, f"/tx/{tx.tx_id.hex()}")
                if not found or found.get("confirmations") != 0:
                    return False
            return True

        await wait_until(back_in_mempools, timeout_s=20, interval_s=0.5,
                         what="the losing branch's transaction back in group B's mempools")

        victim = bed.hosts[9]
        bed.kill(victim)
        for _ in range(2):
            tip = await self.mine_on(first)
        bed.restart(victim)
        await wait_until(lambda: _all_equal(self.tips(bed.hosts), tip), timeout_s=60, interval_s=0.5,
                         what="every host, the restarted one too, at the new tip")
