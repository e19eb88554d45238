"""chaincore-miner: mine on a node through its HTTP API with worker processes (CONTRACT 5).

It asks the node for a template, searches nonce ranges with
chaincore.core.pow.search_nonce in N processes (threads would share one core,
see docs/ENGINEERING 4), and posts a solved block to /submit_block.  Ranges are
small (about 0.1 s each) so a template made stale by a new tip, a changed
mempool or an old timestamp is dropped quickly.  A plain synchronous program:
urllib for HTTP, concurrent.futures for the workers.
"""

import argparse
import collections
import concurrent.futures
import multiprocessing
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

from chaincore.core import errors, keys
from chaincore.core.block import merkle_root
from chaincore.core.jsonview import parse_block
from chaincore.core.mining import NonceRanges, is_stale
from chaincore.core.pow import search_nonce

from .common import (CliError, positive_int, NodeClient, NodeRefused, NodeUnreachable, OneLineParser, UsageError,
                     add_node_option, add_version, node_url, run_main)

PROG = "chaincore-miner"
CHUNK_NONCES = 131_072
STATUS_POLL_S = 1.0
RETRY_S = 2.0
RETRY_LOG_S = 30.0
TTY_STATUS_S = 1.0
LOG_STATUS_S = 10.0
RATE_WINDOW_S = 10.0
MAX_WORKERS = 64  # or the number of CPUs, if larger
_BLOCK_FIELDS = ("index", "previous_hash", "merkle_root", "timestamp", "target", "nonce", "version", "transactions")


@dataclass(frozen=True)
class Template:
    """A candidate block from GET /mining/template, with what a nonce search needs."""

    block: dict
    header: bytes
    nonce_offset: int
    nonce_size: int
    target: int

    @property
    def height(self) -> int:
        return self.block["index"]

    @property
    def previous_hash(self) -> str:
        return self.block["previous_hash"]


def parse_template(obj, address: str | None = None) -> Template:
    """A Template from the node's answer; CliError if it lacks what a miner needs, or pays another than address."""
    try:
        block = obj.get("block") or {k: obj[k] for k in _BLOCK_FIELDS}
        block = {k: v for k, v in block.items() if k != "hash"}
        header = bytes.fromhex(obj["header_hex"])
        offset, size = obj["nonce_offset"], obj["nonce_size"]
        target = int(obj["target"], 16)
        if (type(offset) is not int or type(size) is not int or not 0 < size <= 32
                or not 0 <= offset <= len(header) - size or type(block["index"]) is not int):
            raise ValueError("nonce outside the header")
        parsed = _check_agrees(block, header, offset, size, target)
    except (AttributeError, KeyError, TypeError, ValueError, errors.Invalid) as e:
        raise CliError(f"the node's mining template is malformed ({e})") from None
    if address is not None:
        payload = keys.address_payload(address)
        others = {o.address for o in parsed.transactions[0].outputs if o.recipient != payload and o.amount > 0}
        if others or not parsed.transactions[0].is_coinbase:
            raise CliError(f"the node's mining template pays its reward to {', '.join(sorted(others)) or 'nobody'}, "
                           f"not {address}")
    return Template(block, header, offset, size, target)


def _check_agrees(block: dict, header: bytes, offset: int, size: int, target: int):
    """The parsed block; ValueError unless the header bytes, the target and the merkle root are the block's.

    Otherwise a nonce found for the header would not solve the block the node
    rebuilds from the JSON: every block would be refused, at once on regtest,
    in a loop as fast as the node answers.
    """
    parsed = parse_block(dict(block, nonce=0), "block")
    if merkle_root([tx.tx_id for tx in parsed.transactions]) != parsed.header.merkle_root:
        raise ValueError("its merkle root is not its transactions'")
    if parsed.header.target != target:
        raise ValueError("its target is not its block's")
    blank = bytearray(header)
    blank[offset:offset + size] = bytes(size)
    if bytes(blank) != parsed.header.raw:
        raise ValueError("its header_hex is not its block's header")
    if not parsed.transactions:
        raise ValueError("it has no coinbase")
    return parsed


def _init_worker(miner_alive) -> None:
    """Set up a worker process: ignore Ctrl-C and end when the miner is gone.

    miner_alive is the reading end of a pipe whose only writing end the miner
    holds, so it reads end-of-file the moment the miner dies, however it died.
    """
    # Ctrl-C reaches the whole process group; only the miner should act on it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_after, args=(miner_alive,), daemon=True).start()


def _exit_after(miner_alive) -> None:
    # A miner killed with SIGKILL cannot shut its pool down; idle workers would then live
    # on, and with them the forkserver, holding the miner's stdout and stderr open.  Its
    # pid is no sign: a killed miner stays a zombie until its parent reaps it, and a parent
    # reading the output to its end before it waits would then wait for ever.
    try:
        while True:
            miner_alive.recv_bytes()
    except (EOFError, OSError):
        os._exit(0)


def default_mp_context():
    """forkserver where the platform has it (workers fork from a clean single-threaded server), else spawn."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


class Display:
    """A live status line on a terminal; occasional plain log lines otherwise."""

    def __init__(self, stream, clock):
        self.stream, self.clock = stream, clock
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.next_status = clock() + (TTY_STATUS_S if self.tty else LOG_STATUS_S)
        self.line_shown = False

    def log(self, text: str) -> None:
        self._clear()
        self.stream.write(f"{time.strftime('%H:%M:%S')} {text}\n")
        self.stream.flush()

    def detail(self, text: str) -> None:
        """A line worth showing to someone watching a terminal, but noise in a log file."""
        if self.tty:
            self.log(text)

    def status(self, text: str) -> None:
        now = self.clock()
        if now < self.next_status:
            return
        self.next_status = now + (TTY_STATUS_S if self.tty else LOG_STATUS_S)
        if self.tty:
            self.stream.write(f"\r\x1b[K{text}")
            self.stream.flush()
            self.line_shown = True
        else:
            self.log(text)

    def _clear(self) -> None:
        if self.line_shown:
            self.stream.write("\r\x1b[K")
            self.line_shown = False

    def close(self) -> None:
        self._clear()
        self.stream.flush()


class Miner:
    """The mining loop: templates in, nonce ranges out to the pool, solved blocks back to the node."""

    def __init__(self, node: NodeClient, address: str, workers: int, blocks: int | None, display: Display,
                 clock, executor, chunk: int = CHUNK_NONCES, retry_s: float = RETRY_S, pause_s: float = 0,
                 sleep=time.sleep):
        self.node, self.address, self.workers, self.target_blocks = node, address, workers, blocks
        self.display, self.clock, self.executor, self.chunk = display, clock, executor, chunk
        self.retry_s = retry_s
        self.pause_s, self.sleep = pause_s, sleep  # a rest after each accepted block paces a test network
        self.blocks_found = 0
        self.hashes = 0
        self.started_at = clock()
        self.template = None
        self.generation = 0
        self.ranges = None
        self.template_time = 0.0
        self.seen_status = None
        self.next_poll = 0.0
        self.next_retry = 0.0
        self.away_since = None
        self.next_away_log = 0.0
        self.inflight = {}
        self.rates = collections.deque([(self.started_at, 0)])

    def run(self) -> None:
        """Mine until target_blocks are accepted (forever without it); the first template must come."""
        self.refresh(first=True)
        while self.target_blocks is None or self.blocks_found < self.target_blocks:
            self.fill()
            done = self.wait()
            for future in done:
                self.collect(future)
                if self.target_blocks is not None and self.blocks_found >= self.target_blocks:
                    return
            self.housekeeping()

    def fill(self) -> None:
        if self.template is None:
            return
        t = self.template
        while len(self.inflight) < 2 * self.workers:
            taken = self.ranges.take()
            if taken is None:
                break
            start, count = taken
            future = self.executor.submit(search_nonce, t.header, t.nonce_offset, t.nonce_size, t.target,
                                          start, count)
            self.inflight[future] = (self.generation, start, count)

    def wait(self) -> set:
        if not self.inflight:
            time.sleep(0.1)
            return set()
        done, _ = concurrent.futures.wait(self.inflight, timeout=0.25,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        return done

    def collect(self, future) -> None:
        generation, start, count = self.inflight.pop(future)
        if future.cancelled():
            return
        try:
            nonce = future.result()
        except concurrent.futures.process.BrokenProcessPool:
            raise CliError("a mining worker process died") from None
        self.hashes += count if nonce is None else nonce - start + 1
        if nonce is not None and generation == self.generation and self.template is not None:
            self.submit(self.template, nonce)

    def submit(self, template: Template, nonce: int) -> None:
        block = dict(template.block, nonce=nonce)
        try:
            status, answer = self.node.post("/submit_block", {"block": block}, {"X-Local-Mining": "true"})
        except (NodeRefused, NodeUnreachable) as e:
            self.display.log(f"block at height {template.height} not taken: {e}")
        else:
            state = answer.get("status") if isinstance(answer, dict) else None
            block_hash = answer.get("block_hash", "?") if isinstance(answer, dict) else "?"
            if status == 200 and state == "accepted":
                self.blocks_found += 1
                side = "" if answer.get("main_chain", True) else " (not on the main chain)"
                self.display.log(f"block {answer.get('height', template.height)} {block_hash} accepted{side}")
                if self.pause_s and (self.target_blocks is None or self.blocks_found < self.target_blocks):
                    self.sleep(self.pause_s)
            else:
                self.display.log(f"block at height {template.height} answered {status} {state}: {block_hash}")
        if self.target_blocks is None or self.blocks_found < self.target_blocks:
            self.refresh()

    def housekeeping(self) -> None:
        now = self.clock()
        if self.template is None:
            if now >= self.next_retry:
                self.refresh()
        elif is_stale(self.seen_status, self.seen_status, now - self.template_time):  # too old
            self.refresh()
        elif now >= self.next_poll:
            self.next_poll = now + STATUS_POLL_S
            try:
                status = self.node.get("/status")
            except (NodeUnreachable, NodeRefused, CliError) as e:
                self.report_away(now, e)  # keep hashing: a block found meanwhile is tried when it answers
            else:
                self.report_back(now)
                if is_stale(self.seen_status, self.status_key(status), now - self.template_time):
                    self.refresh()
        elif self.ranges.exhausted and not self.current_inflight():
            self.refresh()
        self.show_status(now)

    def status_key(self, status) -> tuple:
        return (status.get("tip_hash"), status.get("mempool_size")) if isinstance(status, dict) else (None, None)

    def current_inflight(self) -> bool:
        return any(g == self.generation for g, _, _ in self.inflight.values())

    def refresh(self, first: bool = False) -> None:
        """Fetch a new template and drop queued ranges of the old one; retry later if the node is away."""
        self.generation += 1
        for future in [f for f, (g, _, _) in self.inflight.items() if g != self.generation]:
            if future.cancel():
                del self.inflight[future]
        now = self.clock()
        try:
            status = self.node.get("/status")
            template = parse_template(self.node.get("/mining/template", {"address": self.address}), self.address)
        except (NodeUnreachable, NodeRefused) as e:
            busy = isinstance(e, NodeRefused) and e.status == 503  # catching up with its peers: wait for it
            if first and not busy:
                raise
            self.node_away(now, e)
            return
        self.report_back(now)
        self.seen_status = self.status_key(status)
        if self.seen_status[0] not in (None, template.previous_hash):
            self.seen_status = (None, None)  # the tip moved between the two requests: poll again soon
        self.template, self.template_time, self.next_poll = template, now, now + STATUS_POLL_S
        self.ranges = NonceRanges(template.nonce_size, self.chunk)
        txs = len(template.block.get("transactions", []))
        self.display.detail(f"mining block {template.height} on {template.previous_hash[:16]}... ({txs} transactions)")

    def node_away(self, now: float, error: Exception) -> None:
        """Without a template: stop hashing and ask again every retry_s."""
        self.template = None
        self.next_retry = now + self.retry_s
        self.report_away(now, error)

    def report_away(self, now: float, error: Exception) -> None:
        """Log a failure to reach the node at first, then once every RETRY_LOG_S while it lasts."""
        if self.away_since is None:
            self.away_since, self.next_away_log = now, now + RETRY_LOG_S
            self.display.log(f"{error}; retrying every {self.retry_s:g} s")
        elif now >= self.next_away_log:
            self.next_away_log = now + RETRY_LOG_S
            self.display.log(f"still failing after {now - self.away_since:.0f} s: {error}")

    def report_back(self, now: float) -> None:
        if self.away_since is not None:
            self.display.log(f"the node answers again after {now - self.away_since:.0f} s")
            self.away_since = None

    def rate(self, now: float) -> float:
        self.rates.append((now, self.hashes))
        while len(self.rates) > 2 and now - self.rates[1][0] >= RATE_WINDOW_S:
            self.rates.popleft()
        (t0, h0), (t1, h1) = self.rates[0], self.rates[-1]
        return (h1 - h0) / (t1 - t0) if t1 > t0 else 0.0

    def show_status(self, now: float) -> None:
        height = self.template.height if self.template is not None else "?"
        self.display.status(f"height {height}  {format_rate(self.rate(now))}  blocks {self.blocks_found}  "
                            f"hashes {self.hashes:,}")

    def summary(self) -> str:
        elapsed = max(self.clock() - self.started_at, 1e-9)
        return (f"mined {self.blocks_found} block{'s' if self.blocks_found != 1 else ''} in {elapsed:.1f} s: "
                f"{self.hashes:,} hashes, {format_rate(self.hashes / elapsed)} with {self.workers} "
                f"worker{'s' if self.workers != 1 else ''}")


def format_rate(hashes_per_s: float) -> str:
    for unit, scale in (("MH/s", 1e6), ("kH/s", 1e3)):
        if hashes_per_s >= scale:
            return f"{hashes_per_s / scale:.2f} {unit}"
    return f"{hashes_per_s:.0f} H/s"


def make_parser(env=None) -> OneLineParser:
    parser = OneLineParser(prog=PROG, description="Mine ChainCore blocks on a node, paying the rewards to ADDRESS.")
    add_version(parser)
    add_node_option(parser, os.environ if env is None else env)
    parser.add_argument("--address", required=True, help="the address the block rewards go to")
    parser.add_argument("--workers", type=_worker_count, default=os.cpu_count() or 1, metavar="N",
                        help="worker processes searching nonces, at most the larger of "
                             f"{MAX_WORKERS} and the number of CPUs (default: the number of CPUs)")
    parser.add_argument("--blocks", type=positive_int, default=None, metavar="N",
                        help="stop after N accepted blocks (default: mine until interrupted)")
    parser.add_argument("--pause", type=_seconds, default=0, metavar="S",
                        help="rest S seconds after each accepted block, to pace a test network (default 0)")
    return parser


def _worker_count(text: str) -> int:
    """--workers: each worker is a process, so a typo such as 1000000 must not start that many."""
    count = positive_int(text)
    limit = max(MAX_WORKERS, os.cpu_count() or 1)
    if count > limit:
        raise argparse.ArgumentTypeError(f"{count} is more than {limit} (each worker is a process; "
                                         f"this machine has {os.cpu_count() or 1} CPUs)")
    return count


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 86_400:
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 86400 seconds")
    return value


class _Terminate(KeyboardInterrupt):
    """SIGTERM, stopping the miner like Ctrl-C."""


def _on_sigterm(signum, frame):
    raise _Terminate()


def main(argv=None, *, stdout=None, stderr=None, clock=time.monotonic, mp_context=None, env=None) -> int:
    """Run chaincore-miner with argv; Ctrl-C or SIGTERM stops it with a summary and exit status 0."""
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr

    def body(argv):
        args = make_parser(env).parse_args(argv)
        try:
            keys.address_payload(args.address)
        except errors.BadAddress as e:
            raise UsageError(f"--address: {e}") from None
        node = NodeClient(node_url(args.node))
        display = Display(stderr, clock)
        in_main_thread = threading.current_thread() is threading.main_thread()
        old_term = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
        context = mp_context or default_mp_context()
        miner_alive, alive_w = context.Pipe(duplex=False)  # alive_w stays here, open until this process ends
        executor = concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=context,
                                                          initializer=_init_worker, initargs=(miner_alive,))
        miner = Miner(node, args.address, args.workers, args.blocks, display, clock, executor, pause_s=args.pause)
        try:
            miner.run()
        except KeyboardInterrupt:
            display.log("stopping")
        finally:
            old_int = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main_thread else None
            try:
                executor.shutdown(wait=True, cancel_futures=True)
            finally:
                alive_w.close()
                if in_main_thread:
                    signal.signal(signal.SIGINT, old_int)
                    signal.signal(signal.SIGTERM, old_term)
                display.close()
        stdout.write(miner.summary() + "\n")
        return 0
    return run_main(PROG, body, sys.argv[1:] if argv is None else argv, stderr)


if __name__ == "__main__":
    sys.exit(main())
