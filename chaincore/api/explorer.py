"""The explorer: pages for people, served by every node (CONTRACT 7).

Plain server-rendered HTML: home, blocks, block, transaction, address and
mempool pages, and a search that redirects to the page it finds.  Every value
that reaches a page goes through `_e` (HTML escaping).  One small script
keeps pages live: it listens to `/events` and, when the chain or the mempool
changes, fetches the page again and swaps its `<main>`; it also keeps the
"3 min ago" times current.  Nothing needs a build step or a framework.
"""

import html
import re
import time
from collections import OrderedDict
from urllib.parse import quote

from .. import __version__
from ..core import keys
from ..core.errors import BadAddress, Malformed, NotFound
from ..core.params import COIN
from ..core.tx import OutPoint

BLOCKS_PER_PAGE = 20
HISTORY_PER_PAGE = 25
MEMPOOL_ROWS = 200
TX_ROWS = 200         # transactions listed on a block page
INPUT_ROWS = 100      # inputs resolved on a transaction page (each needs a lookup)


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def coins(units: int, signed: bool = False) -> str:
    """Base units as coins with trailing zeros trimmed, e.g. 1050000000 -> "10.5"."""
    sign = "-" if units < 0 else ("+" if signed and units > 0 else "")
    whole, frac = divmod(abs(units), COIN)
    text = f"{whole:,}" + (f".{frac:08d}".rstrip("0") if frac else "")
    return sign + text


def amount(units: int, signed: bool = False) -> str:
    """An amount cell: coins, with the exact base units in the tooltip."""
    cls = " neg" if units < 0 else (" pos" if signed and units > 0 else "")
    return f'<span class="amt{cls}" title="{units:,} units">{_e(coins(units, signed))}</span>'


def when(ts: int) -> str:
    """A time for people: UTC date and time, and how long ago (kept current by the page's script)."""
    text = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
    return f'<time datetime="{ts}" data-ts="{ts}" title="{_e(text)}">{_e(text)}</time>'


def short(hex_text: str, n: int = 16) -> str:
    return f"{hex_text[:n]}…" if len(hex_text) > n else hex_text


def block_link(block_hash: str, label: str | None = None) -> str:
    return f'<a class="hash" href="/explorer/block/{_e(block_hash)}">{_e(label or short(block_hash))}</a>'


def tx_link(tx_id: str, label: str | None = None) -> str:
    return f'<a class="hash" href="/explorer/tx/{_e(tx_id)}">{_e(label or short(tx_id))}</a>'


def address_link(address: str) -> str:
    return f'<a class="addr" href="/explorer/address/{_e(quote(address))}">{_e(address)}</a>'


def difficulty(params, target: int) -> float:
    """How many times harder than the easiest target of the network."""
    return params.pow_limit / max(target, 1)


def supply(params, height: int) -> int:
    """Coins issued by the main chain up to height (the genesis coinbase is unspendable)."""
    total, h = 0, 1
    while h <= height:
        era_end = min(height, (h // params.halving_interval + 1) * params.halving_interval - 1)
        total += params.block_reward(h) * (era_end - h + 1)
        h = era_end + 1
    return total


class Explorer:
    """Renders the pages of one node.  Methods answer (status, html); unknown things are 404 pages."""

    def __init__(self, node, peers, clock=time):
        self._node = node
        self._peers = peers  # the PeerDirectory (api/routes.py)
        self._clock = clock
        self._rows = OrderedDict()  # {block hash: its row in a list of blocks}: see _main_block_rows
        self._blocks_page = None    # ((before, tip hash), answer): see blocks

    # -- pages -------------------------------------------------------------------------

    def home(self) -> tuple:
        node = self._node
        s = node.status()
        chain = node.chain
        tip = chain.tip
        known, active = self._peers.known_urls(), self._peers.active_urls()
        target = chain.next_target(tip)
        mining = getattr(node, "mining_to", None)
        fees = node.fee_estimate()
        syncing = "catching up with peers" if s["syncing"] else "in step with its peers" if active else "on its own"
        cards = [
            ("Height", block_link(tip.hash.hex(), f"{tip.height:,}")),
            ("Tip", block_link(tip.hash.hex())),
            ("Last block", when(tip.timestamp)),
            ("Difficulty", f'<span title="target {target:064x}">{difficulty(node.params, target):,.2f}</span>'),
            ("Chainwork", f'<span title="{tip.chainwork:,} hashes expected">{tip.chainwork:,}</span>'),
            ("Supply", amount(supply(node.params, tip.height)) + " coins"),
            ("Reward", amount(node.params.block_reward(tip.height + 1)) + " coins"),
            ("Mempool", f'<a href="/explorer/mempool">{s["mempool_size"]:,} transaction'
                        f'{"" if s["mempool_size"] == 1 else "s"}</a>, {s["mempool_bytes"]:,} bytes'),
            ("Fee rate", f"{fees['fee_rate']} unit{'s' if fees['fee_rate'] != 1 else ''}/byte"),
            ("Peers", f"{len(active)} active, {len(known)} known"),
            ("Mining", f"this node mines to {address_link(mining)}" if mining else
             'not here; miners use <a href="/openapi.json">/mining/template</a>'),
            ("Status", _e(syncing)),
        ]
        grid = "".join(f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{v}</div></div>'
                       for k, v in cards)
        rows = self._main_block_rows(max(0, tip.height - 9), 10)
        pool = sorted(node.mempool.transactions(), key=lambda t: -node.mempool.entry(t.tx_id).fee_rate)[:5]
        pool_rows = "".join(self._mempool_row(t) for t in pool) or \
            '<tr><td colspan="5" class="muted">the mempool is empty</td></tr>'
        active_tag = ' <span class="ok">active</span>'
        peers = "".join(f"<li>{_e(u)}{active_tag if u in active else ''}</li>"
                        for u in sorted(known)) or '<li class="muted">none</li>'
        body = f"""
<h1>{_e(s['network'])} network <small>node {_e(s['node_id'][:12])} · ChainCore {_e(__version__)}</small></h1>
<div class="grid" id="summary">{grid}</div>
<h2>Latest blocks <small><a href="/explorer/blocks">all blocks</a></small></h2>
<table id="latest-blocks">{BLOCK_HEAD}{rows}</table>
<h2>Waiting in the mempool <small><a href="/explorer/mempool">all</a></small></h2>
<table id="mempool">{MEMPOOL_HEAD}{pool_rows}</table>
<h2>Peers</h2><ul class="peers">{peers}</ul>
<p class="muted">This node advertises itself as {_e(s['url'])}.</p>"""
        return 200, self._page("ChainCore explorer", body, "/status", live="block tx reorg")

    def blocks(self, before: int | None = None) -> tuple:
        """A page of main-chain blocks below height before (None: the newest); kept until the tip changes,
        since it depends on nothing else and decoding its blocks is most of its cost."""
        key = (before, self._node.chain.tip.hash)
        kept = self._blocks_page
        if kept is not None and kept[0] == key:
            return kept[1]
        answer = self._blocks(before)
        self._blocks_page = (key, answer)
        return answer

    def _blocks(self, before: int | None) -> tuple:
        chain = self._node.chain
        top = chain.height if before is None else min(before - 1, chain.height)
        start = max(0, top - BLOCKS_PER_PAGE + 1)
        rows = self._main_block_rows(start, top - start + 1) if top >= 0 else ""
        nav = []
        if top < chain.height:
            nav.append('<a href="/explorer/blocks">newest</a>')
        if start > 0:
            nav.append(f'<a rel="next" href="/explorer/blocks?before={start}">older blocks</a>')
        body = (f"<h1>Blocks {start:,} to {top:,}</h1><table>{BLOCK_HEAD}{rows}</table>"
                f'<p class="pager">{" · ".join(nav)}</p>')
        return 200, self._page("Blocks", body, f"/blocks?start={start}&limit={top - start + 1}",
                               live="block reorg" if before is None else "")

    def block(self, ref: str) -> tuple:
        node = self._node
        chain = node.chain
        block_hash = None
        if re.fullmatch(r"\d{1,10}", ref):
            block_hash = chain.main_hash(int(ref))
        elif re.fullmatch(r"[0-9a-fA-F]{64}", ref):
            block_hash = bytes.fromhex(ref)
        block = chain.block(block_hash) if block_hash else None
        if block is None:
            return self.not_found(f"No block {ref}", "This node holds no block with that hash or height.")
        h = block.hash.hex()
        main = chain.is_main(block.hash)
        confirmations = chain.height - block.height + 1 if main else 0
        nxt = chain.main_hash(block.height + 1) if main else None
        reward = node.params.block_reward(block.height)
        coinbase_value = block.transactions[0].output_total
        fees = max(0, coinbase_value - reward) if block.height else 0
        header = block.header
        facts = [
            ("Height", f"{block.height:,}"),
            ("Hash", f"<code>{_e(h)}</code>"),
            ("Status", f"main chain, {confirmations:,} confirmation{'s' if confirmations != 1 else ''}" if main
             else '<span class="warn">not on the main chain</span>'),
            ("Time", when(header.timestamp)),
            ("Previous", block_link(header.previous_hash.hex()) if block.height else "none (genesis)"),
            ("Next", block_link(nxt.hex()) if nxt else "none yet"),
            ("Transactions", f"{len(block.transactions):,}"),
            ("Size", f"{block.size:,} bytes"),
            ("Reward", amount(reward) + " coins"),
            ("Fees", amount(fees) + " coins"),
            ("Difficulty", f"{difficulty(node.params, header.target):,.2f}"),
            ("Target", f"<code>{header.target:064x}</code>"),
            ("Nonce", f"{header.nonce}"),
            ("Merkle root", f"<code>{header.merkle_root.hex()}</code>"),
        ]
        rows = "".join(self._tx_summary_row(tx) for tx in block.transactions[:TX_ROWS])
        more = (f'<p class="muted">and {len(block.transactions) - TX_ROWS:,} more transactions '
                f'(<a href="/block/{_e(h)}">all as JSON</a>)</p>') if len(block.transactions) > TX_ROWS else ""
        body = (f"<h1>Block {block.height:,}</h1>{_facts(facts)}"
                f"<h2>Transactions</h2><table><tr><th>transaction</th><th>from</th><th>to</th>"
                f"<th class='r'>value</th><th class='r'>size</th></tr>{rows}</table>{more}")
        return 200, self._page(f"Block {block.height}", body, f"/block/{h}", live="block reorg")

    def transaction(self, tx_id: str) -> tuple:
        node = self._node
        try:
            found = node.transaction(bytes.fromhex(tx_id))
        except (NotFound, ValueError):
            return self.not_found(f"No transaction {tx_id}", "Neither the chain nor the mempool holds it.")
        tx = found["tx"]
        in_rows, total_in = [], 0
        for n, txin in enumerate(tx.inputs):
            if tx.is_coinbase:
                in_rows.append('<tr><td>new coins (coinbase)</td><td></td><td></td></tr>')
                break
            if n >= INPUT_ROWS:
                in_rows.append(f'<tr><td colspan="3" class="muted">and {len(tx.inputs) - n} more inputs</td></tr>')
                total_in = None
                break
            prev = self._output_of(txin.prev_tx_id, txin.output_index)
            if prev is None:
                in_rows.append(f"<tr><td>{tx_link(txin.prev_tx_id.hex())}:{txin.output_index}</td>"
                               "<td class='muted'>unknown</td><td></td></tr>")
                total_in = None
                continue
            if total_in is not None:
                total_in += prev.amount
            in_rows.append(f"<tr><td>{tx_link(txin.prev_tx_id.hex())}:{txin.output_index}</td>"
                           f"<td>{address_link(prev.address)}</td><td class='r'>{amount(prev.amount)}</td></tr>")
        out_rows = []
        for n, out in enumerate(tx.outputs):
            spent = ""
            if found["confirmations"] > 0:
                op = OutPoint(tx.tx_id, n)
                if node.chain.get_coin(op) is None:
                    spent = '<span class="muted">spent</span>'
                elif node.mempool.spender(op) is not None:
                    spent = '<span class="muted">being spent</span>'
                else:
                    spent = '<span class="ok">unspent</span>'
            out_rows.append(f"<tr><td>{n}</td><td>{address_link(out.address)}</td>"
                            f"<td class='r'>{amount(out.amount)}</td><td>{spent}</td></tr>")
        if tx.is_coinbase:
            fee_text = "none (a coinbase)"
        elif total_in is None:
            fee_text = "unknown"
        else:
            fee = total_in - tx.output_total
            fee_text = f"{amount(fee)} coins ({fee / tx.size:.2f} units/byte)"
        if found["block_hash"] is not None:
            block = node.chain.block(found["block_hash"])
            label = f"{found['height']:,}"
            status = (f"{found['confirmations']:,} confirmation{'s' if found['confirmations'] != 1 else ''}, "
                      f"in block {block_link(found['block_hash'].hex(), label)}")
            time_row = [("Time", when(block.header.timestamp))]
        else:
            status = '<span class="warn">unconfirmed: waiting in the mempool</span>'
            time_row = []
        facts = [("Id", f"<code>{_e(tx.tx_id.hex())}</code>"), ("Status", status), *time_row,
                 ("Size", f"{tx.size:,} bytes"), ("Fee", fee_text),
                 ("Value out", amount(tx.output_total) + " coins")]
        body = (f"<h1>Transaction <small>{_e(short(tx.tx_id.hex(), 24))}</small></h1>{_facts(facts)}"
                f"<div class='cols'><div><h2>Inputs ({len(tx.inputs)})</h2><table><tr><th>spends</th>"
                f"<th>from</th><th class='r'>value</th></tr>{''.join(in_rows)}</table></div>"
                f"<div><h2>Outputs ({len(tx.outputs)})</h2><table><tr><th>#</th><th>to</th>"
                f"<th class='r'>value</th><th></th></tr>{''.join(out_rows)}</table></div></div>")
        live = "block reorg" if found["confirmations"] < 6 else ""
        return 200, self._page("Transaction", body, f"/tx/{tx.tx_id.hex()}", live=live)

    def address(self, address: str, cursor: str | None = None) -> tuple:
        node = self._node
        try:
            keys.address_payload(address)
        except BadAddress as e:
            return self.not_found("Not an address", f"{address} is not a valid address: {e}", status=400)
        balance = node.balance(address)
        try:
            rows, nxt = node.history_page(address, HISTORY_PER_PAGE, cursor)
        except Malformed as e:
            return self.not_found("Bad page", str(e), status=400)
        facts = [("Address", f"<code>{_e(address)}</code>"),
                 ("Spendable", amount(balance["spendable"]) + " coins"),
                 ("Immature", amount(balance["immature"]) + " coins (mining rewards not yet "
                  f"{node.params.coinbase_maturity} blocks deep)"),
                 ("Unconfirmed", amount(balance["unconfirmed"], signed=True) + " coins"),
                 ("Confirmed", amount(balance["confirmed"]) + " coins"),
                 ("Balance", amount(balance["balance"]) + " coins")]
        hist = "".join(self._history_row(r) for r in rows) or \
            '<tr><td colspan="4" class="muted">no transactions</td></tr>'
        nav = []
        if cursor:
            nav.append(f'<a href="/explorer/address/{_e(quote(address))}">newest</a>')
        if nxt:
            nav.append(f'<a rel="next" href="/explorer/address/{_e(quote(address))}?cursor={_e(quote(nxt))}">'
                       "older transactions</a>")
        body = (f"<h1>Address</h1>{_facts(facts)}<h2>History</h2>"
                f"<table id='history'><tr><th>transaction</th><th>block</th><th class='r'>confirmations</th>"
                f"<th class='r'>amount</th></tr>{hist}</table><p class='pager'>{' · '.join(nav)}</p>")
        return 200, self._page("Address " + address, body, f"/balance/{quote(address)}",
                               live="" if cursor else "block tx reorg")

    def mempool(self) -> tuple:
        pool = self._node.mempool
        txs = sorted(pool.transactions(), key=lambda t: (-pool.entry(t.tx_id).fee_rate, pool.entry(t.tx_id).sequence))
        rows = "".join(self._mempool_row(t) for t in txs[:MEMPOOL_ROWS]) or \
            '<tr><td colspan="5" class="muted">the mempool is empty</td></tr>'
        more = f'<p class="muted">and {len(txs) - MEMPOOL_ROWS:,} more</p>' if len(txs) > MEMPOOL_ROWS else ""
        fees = self._node.fee_estimate()
        body = (f"<h1>Mempool <small>{len(pool):,} transactions, {pool.total_bytes:,} bytes</small></h1>"
                f"<p>A transaction paying {fees['fee_rate']} unit{'s' if fees['fee_rate'] != 1 else ''} per byte "
                f"or more should make the next block (the minimum to be relayed is {fees['min_fee_rate']}).</p>"
                f"<table id='mempool'>{MEMPOOL_HEAD}{rows}</table>{more}")
        return 200, self._page("Mempool", body, "/transactions", live="block tx reorg")

    def search(self, query: str) -> tuple:
        """(303, location) for the page that matches query, else (404, html saying nothing matched)."""
        q = (query or "").strip()
        chain = self._node.chain
        if re.fullmatch(r"\d{1,10}", q):
            if int(q) <= chain.height:
                return 303, f"/explorer/block/{chain.main_hash(int(q)).hex()}"
        elif re.fullmatch(r"[0-9a-fA-F]{64}", q):
            raw = bytes.fromhex(q)
            if chain.block(raw) is not None:
                return 303, f"/explorer/block/{q.lower()}"
            try:
                self._node.transaction(raw)
                return 303, f"/explorer/tx/{q.lower()}"
            except NotFound:
                pass
        elif q:
            try:
                keys.address_payload(q)
                return 303, f"/explorer/address/{quote(q)}"
            except BadAddress:
                pass
        what = f"“{_e(q)}”" if q else "an empty search"
        return self.not_found("Nothing matched", f"Nothing matched {what}. Search takes a block height, "
                              "a block hash, a transaction id or an address.", raw=True)

    def not_found(self, title: str, text: str, status: int = 404, raw: bool = False) -> tuple:
        return status, self._page(title, f"<h1>{_e(title)}</h1><p>{text if raw else _e(text)}</p>", None)

    # -- pieces ------------------------------------------------------------------------

    def _output_of(self, tx_id: bytes, index: int):
        try:
            prev = self._node.transaction(tx_id)["tx"]
        except NotFound:
            return None
        return prev.outputs[index] if index < len(prev.outputs) else None

    def _history_row(self, r: dict) -> str:
        tag = ' <span class="tag">coinbase</span>' if r["coinbase"] else ""
        if r["height"] is not None and r["confirmations"]:
            where = block_link(self._node.chain.main_hash(r["height"]).hex(), f"{r['height']:,}")
        else:
            where = '<span class="warn">unconfirmed</span>'
        return (f"<tr><td>{tx_link(r['tx_id'])}{tag}</td><td>{where}</td>"
                f"<td class='r'>{r['confirmations']:,}</td><td class='r'>{amount(r['amount_delta'], signed=True)}</td></tr>")

    BLOCK_ROWS_KEPT = 1_000

    def _main_block_rows(self, start: int, count: int) -> str:
        """The rows of main-chain blocks start .. start + count - 1, newest first.  A block's row never
        changes, so the last BLOCK_ROWS_KEPT are kept: the home page and the blocks pages decode a block
        once, not on every render."""
        rows = []
        for block_hash in reversed(self._node.chain.main_hashes(start, count)):
            row = self._rows.get(block_hash)
            if row is None:
                row = self._rows[block_hash] = self._block_row(self._node.chain.block(block_hash))
                while len(self._rows) > self.BLOCK_ROWS_KEPT:
                    self._rows.popitem(last=False)
            else:
                self._rows.move_to_end(block_hash)
            rows.append(row)
        return "".join(rows)

    def _block_row(self, b) -> str:
        h = b.hash.hex()
        label = f"{b.height:,}"
        return (f"<tr><td>{block_link(h, label)}</td><td>{block_link(h)}</td>"
                f"<td>{when(b.header.timestamp)}</td><td class='r'>{len(b.transactions):,}</td>"
                f"<td class='r'>{amount(sum(t.output_total for t in b.transactions[1:]))}</td>"
                f"<td class='r'>{b.size:,}</td></tr>")

    def _mempool_row(self, tx) -> str:
        e = self._node.mempool.entry(tx.tx_id)
        return (f"<tr><td>{tx_link(tx.tx_id.hex())}</td><td class='r'>{amount(tx.output_total)}</td>"
                f"<td class='r'>{amount(e.fee)}</td><td class='r'>{e.fee_rate:.2f}</td>"
                f"<td class='r'>{e.size:,}</td></tr>")

    def _tx_summary_row(self, tx) -> str:
        to = ", ".join(address_link(o.address) for o in tx.outputs[:2]) + (" …" if len(tx.outputs) > 2 else "")
        if tx.is_coinbase:
            src = '<span class="tag">coinbase</span>'
        else:
            src = f"{len(tx.inputs)} input{'s' if len(tx.inputs) != 1 else ''}"
        return (f"<tr><td>{tx_link(tx.tx_id.hex())}</td><td>{src}</td><td>{to}</td>"
                f"<td class='r'>{amount(tx.output_total)}</td><td class='r'>{tx.size:,}</td></tr>")

    def _page(self, title: str, body: str, json_path: str | None, live: str = "") -> str:
        network = self._node.params.name
        api = f' · <a href="{_e(json_path)}">this as JSON</a>' if json_path else ""
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)} · ChainCore {_e(network)}</title><style>{CSS}</style></head>
<body data-live="{_e(live)}">
<header><a class="brand" href="/">ChainCore <span>{_e(network)}</span></a>
<nav><a href="/">Home</a><a href="/explorer/blocks">Blocks</a><a href="/explorer/mempool">Mempool</a>
<a href="/openapi.json">API</a></nav>
<form action="/search" method="get" role="search"><input name="q" type="search" aria-label="search"
placeholder="height, block hash, tx id or address" size="44"><button>Search</button></form></header>
<main>{body}</main>
<footer>ChainCore {_e(__version__)}{api} · <span id="live" class="muted"></span></footer>
<script>{SCRIPT}</script></body></html>"""


BLOCK_HEAD = ("<tr><th>height</th><th>hash</th><th>time</th><th class='r'>txs</th>"
              "<th class='r'>value moved</th><th class='r'>bytes</th></tr>")
MEMPOOL_HEAD = ("<tr><th>transaction</th><th class='r'>value</th><th class='r'>fee</th>"
                "<th class='r'>units/byte</th><th class='r'>bytes</th></tr>")


def _facts(facts) -> str:
    return "<dl class='facts'>" + "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"


CSS = """
:root{--fg:#1d2330;--muted:#6b7385;--line:#e3e6ee;--accent:#2456c7;--bg:#f7f8fb}
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;flex-wrap:wrap;gap:1em;align-items:center;padding:.7em 1.5em;background:#18203a;color:#fff}
header a{color:#dfe6ff;text-decoration:none}.brand{font-weight:700;font-size:1.15em;color:#fff}
.brand span{font-weight:400;font-size:.75em;background:#2f3d6b;padding:.1em .5em;border-radius:1em;margin-left:.3em}
nav a{margin-right:1em}form{margin-left:auto;display:flex;gap:.3em}
input{padding:.35em .6em;border:1px solid #46527a;border-radius:4px;background:#fff;min-width:16em}
button{padding:.35em .8em;border:0;border-radius:4px;background:#4b73e0;color:#fff;cursor:pointer}
main{max-width:1100px;margin:0 auto;padding:1em 1.5em}h1 small,h2 small{font-weight:400;color:var(--muted);font-size:.6em;margin-left:.5em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:.7em}
.card{background:#fff;border:1px solid var(--line);border-radius:6px;padding:.6em .8em}
.card .k{color:var(--muted);font-size:.8em;text-transform:uppercase;letter-spacing:.04em}.card .v{font-size:1.05em;overflow-wrap:anywhere}
table{width:100%;border-collapse:collapse;background:#fff;border:1px solid var(--line)}
th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:.8em;color:var(--muted);text-transform:uppercase}.r{text-align:right}
a{color:var(--accent)}a.hash,code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em}
code{overflow-wrap:anywhere}.addr{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.3em 1.2em;background:#fff;border:1px solid var(--line);border-radius:6px;padding:.8em 1em}
dt{color:var(--muted)}dd{margin:0}.muted{color:var(--muted)}.ok{color:#1c7c3a}.warn{color:#a15c00}
.neg{color:#b3261e}.pos{color:#1c7c3a}.tag{font-size:.75em;background:#eef1f8;border-radius:3px;padding:0 .4em;color:var(--muted)}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:1em}@media(max-width:800px){.cols{grid-template-columns:1fr}}
.pager a{margin-right:1em}ul.peers{padding-left:1.2em}footer{max-width:1100px;margin:1em auto;padding:0 1.5em 2em;color:var(--muted);font-size:.85em}
.fresh{animation:fresh 2s ease-out}@keyframes fresh{from{background:#fff6c8}to{background:transparent}}
"""

# Live pages: on an event the page asks for itself again and swaps <main> (no reload, no framework).
# A page opened with #still stays still (screenshots).
SCRIPT = r"""
(function(){
  function ago(ts){var s=Math.max(0,Math.round(Date.now()/1000-ts));
    if(s<60)return s+" s ago";if(s<3600)return Math.floor(s/60)+" min ago";
    if(s<86400)return Math.floor(s/3600)+" h ago";return Math.floor(s/86400)+" days ago";}
  function times(){document.querySelectorAll("time[data-ts]").forEach(function(t){
    t.textContent=t.getAttribute("title")+" ("+ago(+t.dataset.ts)+")";});}
  times();setInterval(times,10000);
  var kinds=(document.body.dataset.live||"").split(" ").filter(Boolean);
  var status=document.getElementById("live");
  if(!kinds.length||!window.EventSource||location.hash==="#still"){return;}
  var pending=null;
  function refresh(){pending=null;fetch(location.href,{headers:{"Accept":"text/html"}}).then(function(r){
      return r.ok?r.text():null;}).then(function(text){if(!text)return;
      var doc=new DOMParser().parseFromString(text,"text/html");var fresh=doc.querySelector("main");
      if(fresh){document.querySelector("main").replaceWith(fresh);fresh.classList.add("fresh");times();}
    }).catch(function(){});}
  var es=new EventSource("/events");
  function later(){if(!pending)pending=setTimeout(refresh,250);}
  kinds.concat(["gap"]).forEach(function(k){es.addEventListener(k,later);});
  es.onopen=function(){status.textContent="live";};
  es.onerror=function(){status.textContent="reconnecting…";};
})();
"""
