"""chaincore-wallet: a one-key wallet whose key never leaves the client (CONTRACT 6).

The wallet file is JSON: the key as PKCS#8 PEM (scrypt + AES-256 when a
passphrase is given), its address, when it was made, and the sends not yet
confirmed, whose spent outputs are reserved so that two sends in a row never
spend one output twice.  It is rewritten atomically with mode 0600.  The node
is asked only for public facts (UTXOs, balance, history, status); signing
reuses chaincore.core.keys and chaincore.core.tx.
"""

import argparse
import contextlib
import fcntl
import getpass
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field

from chaincore.core import errors, keys
from chaincore.core.jsonview import parse_tx, tx_to_json
from chaincore.core.keys import PrivateKey
from chaincore.core.params import COIN, MAX_MONEY, describe_amount
from chaincore.core.tx import NULL_INDEX, NULL_TXID, Transaction, TxIn, TxOut

from .common import (CliError, positive_int, NodeClient, NodeRefused, NodeUnreachable, OneLineParser, UsageError,
                     add_node_option, add_version, format_coins, node_url, parse_coins, run_main)
from .events import wait_for_confirmations

PROG = "chaincore-wallet"
PASSPHRASE_ENV = "CHAINCORE_WALLET_PASSPHRASE"
WALLET_FORMAT = "chaincore-wallet"
WALLET_VERSION = 1
TX_VERSION = 1
HISTORY_PAGE = 100
ESTIMATED_TX_BYTES = 300   # a first guess of the size, refined once the coins are chosen
HIGH_FEE_FLOOR = COIN // 100  # a fee over the amount is refused as a likely typo only above this


@dataclass
class Wallet:
    """A wallet file's contents; `pending` lists the unconfirmed sends (see PendingSend.to_json)."""

    path: str
    address: str
    key_pem: str
    encrypted: bool
    created: int
    pending: list = field(default_factory=list)

    def to_json(self) -> dict:
        return {"format": WALLET_FORMAT, "version": WALLET_VERSION, "address": self.address,
                "encrypted": self.encrypted, "created": self.created, "private_key_pem": self.key_pem,
                "unconfirmed_sends": self.pending}

    def reserved(self) -> set:
        """The outpoints (tx_id hex, output_index) spent by unconfirmed sends."""
        return {(s["tx_id"], s["output_index"]) for p in self.pending for s in p["spends"]}


@contextlib.contextmanager
def wallet_lock(path: str):
    """Hold an exclusive lock beside the wallet file (the file itself is replaced on every save).

    Beside the real file, so that every link to one wallet takes the same lock.
    """
    try:
        handle = open(os.path.realpath(path) + ".lock", "a")
    except OSError as e:
        raise CliError(f"cannot lock {path}: {e.strerror}") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def unconfirmed_change(wallet: "Wallet", reserved: set) -> list:
    """Outputs of the wallet's own unconfirmed sends that pay the wallet back and no later send spends."""
    coins = []
    for p in wallet.pending:
        for n, out in enumerate(p["transaction"].get("outputs", [])):
            if out.get("recipient_address") == wallet.address and (p["tx_id"], n) not in reserved:
                coins.append(Utxo(p["tx_id"], n, int(out["amount"]), None, coinbase=False, mature=True,
                                  spent_in_mempool=False))
    return coins


def pending_send(tx: Transaction, now: int) -> dict:
    """The wallet's record of a send it broadcast: its id, the outputs it spends, the signed JSON."""
    return {"tx_id": tx.tx_id.hex(), "sent": now,
            "spends": [{"tx_id": i.prev_tx_id.hex(), "output_index": i.output_index} for i in tx.inputs],
            "transaction": tx_to_json(tx)}


# -- the wallet file --------------------------------------------------------------

def new_wallet(path: str, passphrase: str, now: int) -> tuple:
    """(Wallet, PrivateKey) for a fresh key, encrypted when passphrase is not empty."""
    key = PrivateKey.generate()
    return Wallet(path, key.address, key.export_pem(passphrase or None), bool(passphrase), now), key


def load_wallet(path: str) -> Wallet:
    """The wallet stored at path; CliError if it is missing or is not a wallet file."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise CliError(f"wallet file {path} does not exist (make one with `{PROG} create --wallet {path}`)") from None
    except OSError as e:
        raise CliError(f"cannot read wallet file {path}: {e.strerror or e}") from None
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise CliError(f"wallet file {path} is not JSON") from None
    try:
        if obj["format"] != WALLET_FORMAT or obj["version"] != WALLET_VERSION:
            raise CliError(f"{path} is not a version {WALLET_VERSION} ChainCore wallet")
        keys.address_payload(obj["address"])
        if (not isinstance(obj["private_key_pem"], str) or type(obj["encrypted"]) is not bool
                or type(obj["created"]) is not int):
            raise ValueError("a field has the wrong type")
    except (KeyError, TypeError, ValueError, errors.BadAddress):
        raise CliError(f"{path} is not a ChainCore wallet file") from None
    pending = obj.get("unconfirmed_sends", [])
    if not (isinstance(pending, list) and all(_is_pending_send(p) for p in pending)):
        raise CliError(f"wallet file {path} is damaged: its unconfirmed_sends are not a list of sends "
                       "(its key and address are intact)")
    return Wallet(path, obj["address"], obj["private_key_pem"], obj["encrypted"], obj["created"], pending)


def _is_pending_send(p) -> bool:
    """Whether p has the shape pending_send gives."""
    return (isinstance(p, dict) and _is_tx_id(p.get("tx_id")) and isinstance(p.get("transaction"), dict)
            and isinstance(p.get("spends"), list)
            and all(isinstance(s, dict) and _is_tx_id(s.get("tx_id")) and type(s.get("output_index")) is int
                    and s["output_index"] >= 0 for s in p["spends"]))


def _is_tx_id(value) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def save_wallet(wallet: Wallet, overwrite: bool = True) -> None:
    """Write the wallet atomically with mode 0600; without overwrite, refuse if the file exists.

    A wallet reached through a symbolic link is written where it lives: replacing
    the link would leave the real file behind, stale, and a copy of the key beside it.
    """
    path = os.path.realpath(wallet.path)
    folder = os.path.dirname(path)
    try:
        fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    except OSError as e:
        raise CliError(f"cannot write in {folder}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp made it 0600
            json.dump(wallet.to_json(), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(temp, path)
        else:
            os.link(temp, path)  # fails if path exists, so two creates never overwrite each other
            os.unlink(temp)
    except FileExistsError:
        raise CliError(f"wallet file {wallet.path} already exists; refusing to overwrite it") from None
    except OSError as e:
        raise CliError(f"cannot write wallet file {wallet.path}: {e.strerror or e}") from None
    finally:
        # whatever stopped the write (a full disk, Ctrl-C), no stray copy of the key stays behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    _sync_folder(folder)


def _sync_folder(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def unlock(wallet: Wallet, passphrase: str | None) -> PrivateKey:
    """The wallet's key; CliError for a wrong passphrase or a key that does not own the address."""
    try:
        key = PrivateKey.import_pem(wallet.key_pem, passphrase if wallet.encrypted else None)
    except (ValueError, TypeError, IndexError):
        if wallet.encrypted:
            raise CliError(f"wrong passphrase for wallet {wallet.path}") from None
        raise CliError(f"wallet {wallet.path} holds a damaged key") from None
    if key.address != wallet.address:
        raise CliError(f"wallet {wallet.path} is damaged: its key does not own {wallet.address}")
    return key


# -- coins and transactions -----------------------------------------------------------

@dataclass(frozen=True)
class Utxo:
    tx_id: str
    output_index: int
    amount: int
    height: int | None
    coinbase: bool | None = None          # the flags a ChainCore node adds; None when a node leaves them out
    mature: bool | None = None
    spent_in_mempool: bool | None = None

    @property
    def outpoint(self) -> tuple:
        return (self.tx_id, self.output_index)


def parse_utxos(answer) -> list:
    """Utxo values from a /utxos answer, without those worth nothing; CliError if it has the wrong shape.

    Outputs of zero are valid in a block (a coinbase once the reward has halved
    away, or anyone's gift), so they are passed over, never spent.
    """
    try:
        utxos = [Utxo(u["tx_id"], u["output_index"], u["amount"], u.get("height"), _flag(u, "coinbase"),
                      _flag(u, "mature"), _flag(u, "spent_in_mempool")) for u in answer["utxos"]]
    except (KeyError, TypeError):
        raise CliError("the node's /utxos answer is malformed") from None
    for u in utxos:
        if (not isinstance(u.tx_id, str) or len(u.tx_id) != 64 or type(u.output_index) is not int
                or type(u.amount) is not int or u.amount < 0):
            raise CliError("the node's /utxos answer is malformed")
    return [u for u in utxos if u.amount > 0]


def _flag(obj: dict, name: str) -> bool | None:
    value = obj.get(name)
    return value if isinstance(value, bool) else None


def select_coins(utxos, need: int, is_spendable=lambda u: True) -> list:
    """The coins to spend for `need` units: largest first, until they cover it; [] if they cannot.

    Largest first keeps transactions small (fewest inputs).  is_spendable is
    asked only about coins that would be picked, so costly checks stay few.
    """
    chosen, total = [], 0
    for u in sorted(utxos, key=lambda u: (-u.amount, u.height or 0, u.tx_id, u.output_index)):
        if total >= need:
            break
        if is_spendable(u):
            chosen.append(u)
            total += u.amount
    return chosen if total >= need else []


def build_send(key: PrivateKey, coins, to_payload: bytes, amount: int, fee: int) -> Transaction:
    """A signed transaction spending coins: amount to to_payload, fee to the miner, the rest back to key."""
    change = sum(c.amount for c in coins) - amount - fee
    if change < 0:
        raise ValueError("coins do not cover amount and fee")
    outputs = [TxOut(amount, to_payload)]
    if change > 0:
        outputs.append(TxOut(change, keys.payload_of(key.public_key)))
    inputs = tuple(TxIn(bytes.fromhex(c.tx_id), c.output_index, key.public_key, b"") for c in coins)
    tx = Transaction(TX_VERSION, inputs, tuple(outputs), 0)
    return tx.with_signatures([key.sign(tx.sighash)] * len(inputs))


def check_fee(fee: int, amount: int, what: str) -> None:
    """CliError for a fee above both the amount and HIGH_FEE_FLOOR: most likely a typo (or a node's bad rate)."""
    if fee > amount and fee > HIGH_FEE_FLOOR:
        raise CliError(f"{what} of {describe_amount(fee)} is more than the amount sent, {describe_amount(amount)}; "
                       "add --allow-high-fee to pay it")


def is_coinbase_json(tx_json) -> bool:
    try:
        (first,) = tx_json["inputs"]
        return first["tx_id"] == NULL_TXID.hex() and first["output_index"] == NULL_INDEX
    except (KeyError, TypeError, ValueError):
        return False


# -- commands ---------------------------------------------------------------------------

class WalletCommands:
    """The subcommands, with their side effects (env, prompt, output, clock) passed in."""

    def __init__(self, env, prompt, stdout, stderr, clock):
        self.env, self.prompt, self.out, self.err, self.clock = env, prompt, stdout, stderr, clock

    def say(self, text: str) -> None:
        self.out.write(text + "\n")

    def note(self, text: str) -> None:
        self.err.write(f"{PROG}: {text}\n")

    def passphrase(self, purpose: str, confirm: bool = False) -> str | None:
        """The passphrase from the environment, else from the terminal; None when neither is there."""
        if PASSPHRASE_ENV in self.env:
            return self.env[PASSPHRASE_ENV]
        if self.prompt is None:
            return None
        first = self._ask(f"Passphrase {purpose}: ")
        if confirm and first and self._ask("Repeat the passphrase: ") != first:
            raise CliError("the passphrases do not match")
        return first

    def _ask(self, text: str) -> str:
        try:
            return self.prompt(text)
        except EOFError:  # Ctrl-D, or a terminal that closed
            raise CliError("no passphrase given (end of input)") from None

    def create(self, args) -> int:
        """Make a key in a new wallet file and print its address; never overwrite a file."""
        if os.path.isdir(args.wallet):
            example = os.path.join(args.wallet, "wallet.json")
            raise CliError(f"{args.wallet} is a folder; give a file name such as {example}")
        if os.path.lexists(args.wallet):
            raise CliError(f"wallet file {args.wallet} already exists; refusing to overwrite it")
        passphrase = self.passphrase("to encrypt the new wallet (empty for none)", confirm=True) or ""
        wallet, _ = new_wallet(args.wallet, passphrase, int(self.clock()))
        save_wallet(wallet, overwrite=False)
        if not passphrase:
            self.note(f"warning: {args.wallet} is NOT encrypted (no passphrase given); "
                      f"set {PASSPHRASE_ENV} or run in a terminal to encrypt it")
        self.say(wallet.address)
        return 0

    def address(self, args) -> int:
        """Print the wallet's address (no passphrase needed: the address is stored in clear)."""
        self.say(load_wallet(args.wallet).address)
        return 0

    def balance(self, args) -> int:
        """Print what the wallet's address owns, in coins: spendable now, immature rewards, unconfirmed."""
        wallet = load_wallet(args.wallet)
        node = NodeClient(node_url(args.node))
        answer = node.get(f"/balance/{wallet.address}")
        try:
            confirmed = _units(answer["confirmed"])
            unconfirmed = _units(answer["unconfirmed"], signed=True)
            total = _units(answer.get("balance", confirmed + unconfirmed))
            spendable = answer.get("spendable")
            immature = answer.get("immature")
            spendable = None if spendable is None else _units(spendable)
            immature = None if immature is None else _units(immature)
        except (KeyError, TypeError, ValueError):
            raise CliError("the node's /balance answer is malformed") from None
        self.say(f"address      {wallet.address}")
        if spendable is not None:
            self.say(f"spendable    {format_coins(spendable)}")
        if immature is not None:
            self.say(f"immature     {format_coins(immature)}  (mining rewards that are not spendable yet)")
        self.say(f"unconfirmed  {format_coins(unconfirmed, signed=True)}")
        self.say(f"confirmed    {format_coins(confirmed)}")
        self.say(f"balance      {format_coins(total)}")
        waiting = [p for p in wallet.pending
                   if (node.get(f"/tx/{p['tx_id']}", missing_ok=True) or {}).get("confirmations", 0) == 0]
        if waiting:
            self.say(f"pending sends {len(waiting)} (sent by this wallet, not yet confirmed)")
        return 0

    def history(self, args) -> int:
        """Print one line per transaction touching the wallet's address, newest first: id, signed amount, where.

        Pages are fetched as they are printed, so `| head` asks the node for
        little.  With --limit the output stops there and says how to go on.
        """
        wallet = load_wallet(args.wallet)
        node = NodeClient(node_url(args.node))
        cursor, printed, seen = args.cursor, 0, set()
        while True:
            if cursor in seen:  # a node whose pages lead back to one already read would never end
                raise CliError(f"the node's /history pages loop (cursor {cursor!r} came twice)")
            seen.add(cursor)
            page = HISTORY_PAGE if args.limit is None else min(HISTORY_PAGE, args.limit - printed)
            query = {"limit": page, **({"cursor": cursor} if cursor else {})}
            answer = node.get(f"/history/{wallet.address}", query)
            try:
                entries = [(e["tx_id"], e.get("height"), int(e.get("confirmations", 0)), int(e["amount_delta"]))
                           for e in answer["history"]]
                cursor = answer.get("next")
                if cursor is not None and not isinstance(cursor, (str, int)) or isinstance(cursor, bool):
                    raise TypeError("next is not a cursor")
            except (KeyError, TypeError, ValueError, AttributeError):
                raise CliError("the node's /history answer is malformed") from None
            if not entries and not printed:
                self.say(f"no transactions for {wallet.address}")
            for tx_id, height, confirmations, delta in entries:
                where = f"height {height}" if height is not None and confirmations > 0 else "unconfirmed"
                plural = "" if confirmations == 1 else "s"
                self.say(f"{tx_id}  {format_coins(delta, signed=True):>19}  {where} "
                         f"({confirmations} confirmation{plural})")
            printed += len(entries)
            if not cursor:
                return 0
            if args.limit is not None and printed >= args.limit:
                self.note(f"more transactions: add --cursor {cursor} to go on")
                return 0

    def send(self, args) -> int:
        """Select coins, sign a payment with change, and broadcast it (or print it with --no-broadcast)."""
        load_wallet(args.wallet)  # a missing or foreign file is reported before any lock file is made
        if args.no_broadcast:
            return self._send(args)  # it writes nothing, so it needs no lock (a read-only wallet will do)
        with wallet_lock(args.wallet):  # two sends at once from one wallet take turns
            return self._send(args)

    def _send(self, args) -> int:
        node = NodeClient(node_url(args.node))
        to_payload = _payload(args.to, "--to")
        amount = parse_coins(args.amount, "--amount")
        fee = None if args.fee is None else parse_coins(args.fee, "--fee", allow_zero=True)
        if fee is not None and not args.allow_high_fee:
            check_fee(fee, amount, "--fee")
        wallet = load_wallet(args.wallet)
        passphrase = None
        if wallet.encrypted:
            passphrase = self.passphrase(f"for {args.wallet}")
            if passphrase is None:
                raise CliError(f"wallet {args.wallet} is encrypted: set {PASSPHRASE_ENV} or run in a terminal")
        key = unlock(wallet, passphrase)
        status = node.get("/status")
        utxos = parse_utxos(node.get(f"/utxos/{wallet.address}"))
        if self.reconcile(wallet, node, utxos) and not args.no_broadcast:
            save_wallet(wallet)
        reserved = wallet.reserved()
        ours = [u for u in utxos if u.outpoint in reserved]
        # Spent by a mempool transaction this wallet did not record (e.g. a copy of the key elsewhere).
        others = [u for u in utxos if u.outpoint not in reserved and u.spent_in_mempool]
        free = [u for u in utxos if u.outpoint not in reserved and not u.spent_in_mempool]
        immature = []
        spendable = self.maturity_check(node, status, immature)
        change = unconfirmed_change(wallet, reserved)
        fee_rate = None
        if fee is None:
            fee_rate = self.fee_rate(node)
            fee = fee_rate * ESTIMATED_TX_BYTES
        for _ in range(5):  # with a fee rate, the fee follows the size, which follows the coins chosen
            immature.clear()
            coins = select_coins(free, amount + fee, spendable)
            if not coins and change:
                # confirmed coins first; this wallet's own unconfirmed change only when they fall short
                # (the node takes chains of unconfirmed transactions)
                immature.clear()
                coins = select_coins(free + change, amount + fee, spendable)
            if not coins or fee_rate is None:
                break
            needed = fee_rate * build_send(key, coins, to_payload, amount, fee).size
            if needed == fee:
                break
            fee = needed  # the rate times the size of what will be signed, not the first guess
        if not coins:
            have = sum(u.amount for u in free + change) - sum(u.amount for u in immature)
            detail = []
            if ours:
                detail.append(f"{format_coins(sum(u.amount for u in ours))} coins held by unconfirmed sends")
            if others:
                detail.append(f"{format_coins(sum(u.amount for u in others))} coins spent by other unconfirmed "
                              "transactions")
            if immature:
                detail.append(f"{format_coins(sum(u.amount for u in immature))} coins in immature coinbases")
            raise CliError(f"insufficient funds: have {describe_amount(have)} spendable"
                           + (f" ({', '.join(detail)})" if detail else "")
                           + f", need {describe_amount(amount + fee)} (amount {format_coins(amount)} "
                           f"+ fee {format_coins(fee)})")
        tx = build_send(key, coins, to_payload, amount, fee)
        if fee_rate is not None and fee < fee_rate * tx.size:
            raise CliError(f"could not settle the fee at {fee_rate} units per byte; give --fee")
        if fee_rate is not None and not args.allow_high_fee:
            check_fee(fee, amount, f"the node's rate of {fee_rate} units per byte makes a fee that")
        if args.no_broadcast:
            self.say(json.dumps(tx_to_json(tx), indent=2))
            return 0
        # Recorded before it is sent: if we die mid-send, its outputs stay reserved.
        wallet.pending.append(pending_send(tx, int(self.clock())))
        save_wallet(wallet)
        try:
            _, answer = node.post("/add_transaction", {"transaction": tx_to_json(tx)})
        except NodeRefused:
            wallet.pending.pop()
            save_wallet(wallet)
            raise
        except NodeUnreachable as e:
            raise CliError(f"{e}; the node may not have received transaction {tx.tx_id.hex()}: "
                           "the wallet keeps it as unconfirmed and sends it again with the next send") from None
        state = answer.get("status", "accepted") if isinstance(answer, dict) else "accepted"
        rate = f", {fee_rate} unit{'s' if fee_rate != 1 else ''}/byte from the node" if fee_rate is not None else ""
        self.say(f"sent {format_coins(amount)} to {args.to} (fee {format_coins(fee)}{rate}, "
                 f"{len(coins)} input{'s' if len(coins) != 1 else ''}): {tx.tx_id.hex()} {state}")
        if args.wait:
            confirmations = wait_for_confirmations(node, tx.tx_id.hex(), args.wait, args.wait_timeout,
                                                   progress=self.note)
            self.say(f"{tx.tx_id.hex()} has {confirmations} confirmation{'s' if confirmations != 1 else ''}")
        return 0

    def fee_rate(self, node: NodeClient) -> int:
        """The node's fee rate estimate (units per byte) from /fees."""
        answer = node.get("/fees")
        try:
            rate = answer["fee_rate"]
        except (KeyError, TypeError):
            raise CliError("the node's /fees answer is malformed; give --fee") from None
        if type(rate) is not int or not 0 <= rate <= 1_000_000:
            raise CliError("the node's /fees answer is malformed; give --fee")
        return rate

    def reconcile(self, wallet: Wallet, node: NodeClient, utxos) -> bool:
        """Forget sends that are confirmed or can no longer confirm; resend those the node lost.

        A send is kept while the node shows it unconfirmed.  Once confirmed, or
        unknown to the node with none of its inputs unspent, it is dropped.  If
        the node does not know it but its inputs are unspent (evicted, node
        restarted, or never delivered), it is sent again and dropped only if
        the node refuses it.  Returns whether the record changed.
        """
        unspent = {u.outpoint for u in utxos}
        kept = []
        for p in wallet.pending:
            found = node.get(f"/tx/{p['tx_id']}", missing_ok=True)
            if found is not None:
                if not isinstance(found, dict) or type(found.get("confirmations", 0)) is not int:
                    raise CliError(f"the node's /tx/{p['tx_id']} answer is malformed")
                if found.get("confirmations", 0) == 0:
                    kept.append(p)
                continue
            if not any((s["tx_id"], s["output_index"]) in unspent for s in p["spends"]):
                continue
            try:
                parse_tx(p["transaction"])
                node.post("/add_transaction", {"transaction": p["transaction"]})
            except (NodeRefused, errors.Invalid) as e:
                self.note(f"forgetting unconfirmed send {p['tx_id']}: {e}")
                continue
            kept.append(p)
        changed = kept != wallet.pending
        wallet.pending = kept
        return changed

    def maturity_check(self, node: NodeClient, status: dict, immature: list):
        """A predicate: False for a coinbase too young to spend in the next block (collected in immature).

        A ChainCore node marks each UTXO `coinbase` and `mature`; for a node
        that does not, only coins young enough to be immature cost a /tx lookup.
        """
        try:
            maturity, height = int(status.get("coinbase_maturity", 0)), int(status["height"])
        except (KeyError, TypeError, ValueError):
            raise CliError("the node's /status answer is malformed") from None

        def spendable(u: Utxo) -> bool:
            if u.mature is not None or u.coinbase is False:
                if u.mature is False:
                    immature.append(u)
                return u.mature is not False
            if u.height is None or height + 1 - u.height >= maturity:
                return True
            tx = node.get(f"/tx/{u.tx_id}", missing_ok=True)
            if tx is not None and is_coinbase_json(tx):
                immature.append(u)
                return False
            return True
        return spendable


def _units(value, signed: bool = False) -> int:
    """An amount of base units from a node's answer: an integer within the money supply; ValueError otherwise."""
    low = -MAX_MONEY if signed else 0
    if type(value) is not int or not low <= value <= MAX_MONEY:
        raise ValueError(f"{value!r} is not an amount")
    return value


def _payload(address: str, option: str) -> bytes:
    try:
        return keys.address_payload(address)
    except errors.BadAddress as e:
        raise UsageError(f"{option}: {e}") from None


def _wallet_path(text: str) -> str:
    """--wallet: a file name, not nothing and not a folder (create would otherwise write beside it)."""
    if not text:
        raise argparse.ArgumentTypeError("needs a file name")
    if text.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"{text} names a folder; give a file name such as {text}wallet.json")
    return text


def make_parser(env=None) -> OneLineParser:
    parser = OneLineParser(prog=PROG, description="A ChainCore wallet: one key, kept on this machine.")
    add_version(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name, help_text, node=False):
        p = commands.add_parser(name, help=help_text, description=help_text)
        add_version(p)
        p.add_argument("--wallet", required=True, type=_wallet_path, metavar="FILE", help="the wallet file")
        if node:
            add_node_option(p, os.environ if env is None else env)
        return p

    command("create", "Make a new key in a new wallet file "
                      f"(encrypted with {PASSPHRASE_ENV} or a prompted passphrase).")
    command("address", "Print the wallet's address.")
    command("balance", "Print the spendable, immature and unconfirmed amounts, in coins.", node=True)
    history = command("history", "Print one line per transaction touching the wallet's address, newest first.",
                      node=True)
    history.add_argument("--limit", type=positive_int, default=None, metavar="N",
                         help="print at most N transactions, then say how to go on (default: all)")
    history.add_argument("--cursor", default=None, metavar="C", help="start where an earlier --limit stopped")
    send = command("send", "Sign a payment here and hand it to the node.", node=True)
    send.add_argument("--to", required=True, metavar="ADDR", help="the recipient's address")
    send.add_argument("--amount", required=True, metavar="COINS", help="coins to send, e.g. 10.5 (up to 8 decimals)")
    send.add_argument("--fee", default=None, metavar="COINS",
                      help="coins left to the miner, e.g. 0.0001 (default: the node's /fees rate for this size)")
    send.add_argument("--wait", type=positive_int, default=None, metavar="N",
                      help="after sending, wait until the payment has N confirmations")
    send.add_argument("--wait-timeout", type=positive_int, default=3600, metavar="SECONDS",
                      help="give up waiting after this many seconds (default 3600)")
    send.add_argument("--allow-high-fee", action="store_true",
                      help="pay a fee larger than the amount (above 0.01 coin such a fee is refused as a likely typo)")
    send.add_argument("--no-broadcast", action="store_true",
                      help="print the signed transaction JSON instead of sending it; writes nothing to the wallet "
                           "file, so its coins are not reserved (a read-only wallet will do)")
    return parser


def main(argv=None, *, env=None, prompt="terminal", stdout=None, stderr=None, clock=time.time) -> int:
    """Run chaincore-wallet with argv; prompt is a getpass-like callable, or None for no terminal."""
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    if prompt == "terminal":
        prompt = getpass.getpass if sys.stdin is not None and sys.stdin.isatty() else None

    def body(argv):
        args = make_parser(env).parse_args(argv)
        commands = WalletCommands(os.environ if env is None else env, prompt, stdout, stderr, clock)
        return getattr(commands, args.command)(args)
    return run_main(PROG, body, sys.argv[1:] if argv is None else argv, stderr)


if __name__ == "__main__":
    sys.exit(main())
