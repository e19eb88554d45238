"""What the switch counted: Ethernet frame bytes per host and per pair of hosts, as snapshots that subtract.

Counts are whole frames (Ethernet header included, no preamble or FCS) as
delivered by the switch; a frame flooded to k ports counts k times.  Traffic
to or from the observer (the machine watching the testbed) is kept apart,
so what the hosts cost each other is never mixed with what watching them
cost.
"""

import collections

OBSERVER = "observer"


class Traffic:
    """One snapshot of the switch's counters; `later - earlier` is what happened in between."""

    def __init__(self, stats: dict, span: bool = False):
        self.time, self.span = stats["time"], span     # a difference spans `time` seconds
        self.hosts = stats["hosts"]
        self.pairs = collections.Counter({(s, r): n for s, r, n in stats["pairs"]})
        self.cpu_s, self.late_ms = stats["cpu_s"], stats["late_ms"]
        kinds = stats.get("kinds", [])
        self.kind_bytes = collections.Counter({(r, k): n for r, k, n, _ in kinds})
        self.kind_frames = collections.Counter({(r, k): f for r, k, _, f in kinds})

    def __sub__(self, earlier: "Traffic") -> "Traffic":
        hosts = {name: {k: (v - earlier.hosts[name][k] if k.endswith(("_frames", "_bytes", "_errors")) else v)
                        for k, v in counters.items()}
                 for name, counters in self.hosts.items()}
        pairs = [[s, r, n - earlier.pairs.get((s, r), 0)] for (s, r), n in self.pairs.items()]
        late = {"max": self.late_ms["max"], "sum": self.late_ms["sum"] - earlier.late_ms["sum"],
                "frames": self.late_ms["frames"] - earlier.late_ms["frames"]}
        kinds = [[r, k, n - earlier.kind_bytes.get((r, k), 0), self.kind_frames[(r, k)] - earlier.kind_frames.get((r, k), 0)]
                 for (r, k), n in self.kind_bytes.items()]
        return Traffic({"time": self.time - earlier.time, "hosts": hosts, "pairs": pairs,
                        "cpu_s": self.cpu_s - earlier.cpu_s, "late_ms": late, "kinds": kinds}, span=True)

    @property
    def host_names(self) -> list:
        return sorted((n for n in self.hosts if n != OBSERVER), key=lambda n: int(n[1:]))

    def received_from_hosts(self, host: str) -> int:
        """Bytes delivered to host from the other hosts (not from the observer)."""
        return sum(n for (s, r), n in self.pairs.items() if r == host and s != OBSERVER)

    def sent_to_hosts(self, host: str) -> int:
        """Bytes host sent that reached the other hosts (not the observer)."""
        return sum(n for (s, r), n in self.pairs.items() if s == host and r != OBSERVER)

    def received_by_kind(self, hosts=None) -> dict:
        """{kind: (bytes, frames)} delivered from other hosts to hosts (all when None): each HTTP request and
        answer by method and path, bare TCP acknowledgements, connection set-up and tear-down, ARP."""
        wanted = None if hosts is None else set(hosts)
        out = collections.defaultdict(lambda: [0, 0])
        for (r, k), n in self.kind_bytes.items():
            if wanted is None or r in wanted:
                out[k][0] += n
                out[k][1] += self.kind_frames[(r, k)]
        return {k: tuple(v) for k, v in out.items() if v[0]}

    def link_bytes(self) -> dict:
        """{(a, b): bytes both ways} for every pair of hosts that exchanged frames, a < b."""
        links = collections.Counter()
        for (s, r), n in self.pairs.items():
            if OBSERVER not in (s, r) and n:
                links[tuple(sorted((s, r), key=lambda h: int(h[1:])))] += n
        return dict(links)

    def observer_bytes(self) -> int:
        """Bytes between the observer and the hosts, both ways."""
        return sum(n for (s, r), n in self.pairs.items() if OBSERVER in (s, r))

    @property
    def mean_late_ms(self) -> float:
        """How late, on average, the switch delivered a delayed frame (a busy machine's error on every delay)."""
        return self.late_ms["sum"] / self.late_ms["frames"] if self.late_ms["frames"] else 0.0

    def table(self) -> str:
        """A plain-text table: per host, bytes sent to and received from other hosts, frames lost and blocked."""
        rows = [f"{'host':>6} {'sent B':>12} {'received B':>12} {'lost':>7} {'blocked':>8}"]
        for name in self.host_names:
            c = self.hosts[name]
            rows.append(f"{name:>6} {self.sent_to_hosts(name):>12,} {self.received_from_hosts(name):>12,} "
                        f"{c['lost_frames']:>7} {c['blocked_frames']:>8}")
        rows.append(f"observer traffic {self.observer_bytes():,} B" + (f" over {self.time:.1f} s" if self.span else ""))
        rows.append(f"switch: {self.cpu_s:.1f} s CPU, delayed frames late by {self.mean_late_ms:.2f} ms on average, "
                    f"{self.late_ms['max']:.1f} ms at most since it started")
        return "\n".join(rows)
