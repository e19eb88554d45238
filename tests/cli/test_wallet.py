"""chaincore-wallet: the wallet file, exact amounts, coin selection, sends against a fake node, every error path."""

import io
import json
import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from chaincore.cli import wallet
from chaincore.cli.common import UsageError, format_coins, parse_coins
from chaincore.core import keys
from chaincore.core.jsonview import parse_tx, tx_to_json
from chaincore.core.params import COIN, MAX_MONEY
from chaincore.core.tx import make_coinbase
from tests.support.builders import BOB, CAROL, payload

from .fakenode import FakeNode

NOW = 1_796_000_000
PASSPHRASE = "correct horse"


class WalletNode(FakeNode):
    """A fake node holding UTXOs for addresses, a mempool that refuses double spends, and a confirm() step."""

    def __init__(self, testcase, height=200, maturity=100):
        super().__init__(testcase)
        self.height, self.maturity = height, maturity
        self.utxos = {}      # (tx_id, index) -> (address, amount, height)
        self.txs = {}        # tx_id -> (tx json, confirmations)
        self.mempool = {}    # tx_id -> tx json
        self.refusal = None
        self.flags = False   # whether /utxos marks coinbase, mature and spent_in_mempool, as ChainCore does
        self.answer_status = lambda seen: (200, {"height": self.height, "coinbase_maturity": self.maturity,
                                                 "tip_hash": "00" * 32, "mempool_size": len(self.mempool)})
        self.answers[("GET", "/status")] = self.answer_status
        self.answers[("POST", "/add_transaction")] = self.add_transaction

    def fund(self, address, amount, height=1, coinbase=False):
        """A new confirmed output of amount units to address, at height; returns its tx_id."""
        self.height = max(self.height, height)
        tx = make_coinbase(height, [(keys.address_payload(address), amount)], os.urandom(8))
        tx_json = tx_to_json(tx)
        if not coinbase:
            tx_json["inputs"][0]["tx_id"] = "11" * 32
        self.utxos[(tx_json["tx_id"], 0)] = (address, amount, height)
        self.txs[tx_json["tx_id"]] = (tx_json, self.height - height + 1)
        return tx_json["tx_id"]

    def answer(self, seen):
        if seen.method == "GET" and seen.path.startswith("/utxos/"):
            address = seen.path.rsplit("/", 1)[1]
            spent = {(i["tx_id"], i["output_index"]) for t in self.mempool.values() for i in t["inputs"]}
            utxos = []
            for (t, i), (a, amount, h) in self.utxos.items():
                if a == address:
                    utxos.append({"tx_id": t, "output_index": i, "amount": amount, "height": h})
                    if self.flags:
                        coinbase = wallet.is_coinbase_json(self.txs[t][0])
                        utxos[-1].update(coinbase=coinbase, spent_in_mempool=(t, i) in spent,
                                         mature=not coinbase or self.height + 1 - h >= self.maturity)
            return 200, {"utxos": utxos}
        if seen.method == "GET" and seen.path.startswith("/tx/"):
            found = self.txs.get(seen.path.rsplit("/", 1)[1])
            if found is None:
                return 404, {"error": "unknown transaction"}
            return 200, dict(found[0], confirmations=found[1])
        return super().answer(seen)

    def add_transaction(self, seen):
        if self.refusal:
            return 400, {"error": self.refusal}
        tx = parse_tx(seen.body["transaction"])
        if tx.tx_id.hex() in self.mempool:
            return 200, {"status": "duplicate", "tx_id": tx.tx_id.hex()}
        spent = {(i["tx_id"], i["output_index"]) for t in self.mempool.values() for i in t["inputs"]}
        for txin in tx.inputs:
            outpoint = (txin.prev_tx_id.hex(), txin.output_index)
            parent = self.mempool.get(outpoint[0])  # chains of unconfirmed transactions are allowed
            if outpoint not in self.utxos and not (parent and outpoint[1] < len(parent["outputs"])):
                return 400, {"error": "input is unknown or already spent"}
            if outpoint in spent:
                return 400, {"error": "double spend"}
            if not keys.verify(txin.public_key, tx.sighash, txin.signature):
                return 400, {"error": "bad signature"}
        self.mempool[tx.tx_id.hex()] = tx_to_json(tx)
        self.txs[tx.tx_id.hex()] = (tx_to_json(tx), 0)
        return 200, {"status": "accepted", "tx_id": tx.tx_id.hex()}

    def confirm(self):
        """Mine the mempool: spend its inputs, create its outputs, one confirmation each."""
        self.height += 1
        for tx_id, tx_json in self.mempool.items():  # in arrival order: parents before children
            for n, o in enumerate(tx_json["outputs"]):
                self.utxos[(tx_id, n)] = (o["recipient_address"], o["amount"], self.height)
            for i in tx_json["inputs"]:
                del self.utxos[(i["tx_id"], i["output_index"])]
            self.txs[tx_id] = (tx_json, 1)
        self.mempool = {}

    def posted(self) -> list:
        return [parse_tx(s.body["transaction"]) for s in self.seen("POST", "/add_transaction")]


class CliCase(SynchronousTestCase):
    """Runs chaincore-wallet in-process with captured output; wallets are unencrypted unless a test says so.

    (scrypt costs about 0.3 s a use, so only the tests about encryption pay it.)
    """

    env = {wallet.PASSPHRASE_ENV: ""}
    encrypted = {wallet.PASSPHRASE_ENV: PASSPHRASE}

    def setUp(self):
        self.folder = self.mktemp()
        os.makedirs(self.folder)
        self.path = os.path.join(self.folder, "w.json")

    def run_wallet(self, *argv, env=None, prompt=None):
        out, err = io.StringIO(), io.StringIO()
        code = wallet.main(list(argv), env=self.env if env is None else env, prompt=prompt, stdout=out,
                           stderr=err, clock=lambda: NOW)
        return code, out.getvalue(), err.getvalue()

    def ok(self, *argv, **kw) -> str:
        code, out, err = self.run_wallet(*argv, **kw)
        self.assertEqual(code, 0, err)
        return out

    def fails(self, code, text, *argv, **kw) -> str:
        """Run argv, check exit status code and exactly one stderr line holding text; return that line."""
        got, out, err = self.run_wallet(*argv, **kw)
        self.assertEqual((got, len(err.splitlines())), (code, 1), err)
        self.assertTrue(err.startswith("chaincore-wallet: error: "), err)
        self.assertIn(text, err)
        return err

    def create(self, **kw) -> str:
        return self.ok("create", "--wallet", self.path, **kw).strip()

    def send(self, node, to, amount, fee="0.0001", *extra):
        return self.run_wallet("send", "--wallet", self.path, "--node", node.url, "--to", to,
                               "--amount", amount, "--fee", fee, *extra)


class AmountTests(SynchronousTestCase):
    def test_exact_conversion(self):
        """Decimal coin amounts become exact base units, at both ends of the range."""
        for text, units in [("0.00000001", 1), ("1", COIN), ("10.5", 1_050_000_000), ("21000000", MAX_MONEY),
                            ("0.1", 10_000_000), ("1.10000000", 110_000_000), ("1.100000000", 110_000_000),
                            (".5", COIN // 2), ("5.", 5 * COIN), ("20999999.99999999", MAX_MONEY - 1),
                            (" 2 ", 2 * COIN), ("007", 7 * COIN)]:
            self.assertEqual(parse_coins(text), units, text)

    def test_refused_amounts(self):
        """More than 8 places, signs, exponents, NaN, words, zero and over the supply are refused."""
        for text in ["1.123456789", "0.000000001", "-1", "+1", "1e-8", "1E3", "NaN", "nan", "inf", "Infinity",
                     "abc", "", ".", "1,5", "1_000", "0x10", "٣", "0", "0.00000000", "21000000.00000001",
                     "99999999999999999999999"]:
            self.assertRaises(UsageError, parse_coins, text)

    def test_supply_error_names_units(self):
        """An amount over the supply is refused naming the supply in coins and base units."""
        err = self.assertRaises(UsageError, parse_coins, "21000001")
        self.assertIn("21000000.00000000 coins (2,100,000,000,000,000 units)", str(err))

    def test_zero_fee_allowed(self):
        """A fee may be zero (the node decides whether it is enough)."""
        self.assertEqual(parse_coins("0", "--fee", allow_zero=True), 0)

    def test_format(self):
        """Base units print as exact coins with 8 places, signed when asked."""
        self.assertEqual(format_coins(1), "0.00000001")
        self.assertEqual(format_coins(MAX_MONEY), "21000000.00000000")
        self.assertEqual(format_coins(-150_000_000), "-1.50000000")
        self.assertEqual(format_coins(5, signed=True), "+0.00000005")


class CoinSelectionTests(SynchronousTestCase):
    coins = [wallet.Utxo(f"{n:064x}", 0, amount, 1) for n, amount in enumerate([5, 50, 20, 1])]

    def test_largest_first(self):
        """Coins are taken largest first until they cover the need."""
        self.assertEqual([c.amount for c in wallet.select_coins(self.coins, 60)], [50, 20])
        self.assertEqual([c.amount for c in wallet.select_coins(self.coins, 50)], [50])
        self.assertEqual([c.amount for c in wallet.select_coins(self.coins, 76)], [50, 20, 5, 1])

    def test_cannot_cover(self):
        """Coins worth less than the need select nothing."""
        self.assertEqual(wallet.select_coins(self.coins, 77), [])

    def test_unspendable_coins_are_skipped(self):
        """A coin the predicate refuses is passed over."""
        chosen = wallet.select_coins(self.coins, 20, lambda c: c.amount != 50)
        self.assertEqual([c.amount for c in chosen], [20])

    def test_change_goes_back_to_the_key(self):
        """Above zero, the change is a second output to the key's own address; every input is signed."""
        key = BOB
        tx = wallet.build_send(key, self.coins[1:3], payload(CAROL), 60, 3)
        self.assertEqual([(o.amount, o.recipient) for o in tx.outputs], [(60, payload(CAROL)), (7, payload(key))])
        for txin in tx.inputs:
            self.assertTrue(keys.verify(txin.public_key, tx.sighash, txin.signature))
        exact = wallet.build_send(key, self.coins[1:2], payload(CAROL), 49, 1)
        self.assertEqual([o.amount for o in exact.outputs], [49])


class WalletFileTests(CliCase):
    def test_create_encrypted(self):
        """With a passphrase the key is stored encrypted, the file is mode 0600, and the address is printed."""
        address = self.create(env=self.encrypted)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        with open(self.path) as f:
            stored = json.load(f)
        self.assertEqual(stored["address"], address)
        self.assertTrue(stored["encrypted"])
        self.assertIn("ENCRYPTED PRIVATE KEY", stored["private_key_pem"])
        self.assertEqual(stored["created"], NOW)
        loaded = wallet.load_wallet(self.path)
        self.assertEqual(wallet.unlock(loaded, PASSPHRASE).address, address)
        self.assertEqual(self.ok("address", "--wallet", self.path).strip(), address)

    def test_send_needs_the_right_passphrase(self):
        """send opens an encrypted wallet with the right passphrase only, and asks for one."""
        self.create(env=self.encrypted)
        node = WalletNode(self)
        node.fund(wallet.load_wallet(self.path).address, 50 * COIN)
        common = ["send", "--wallet", self.path, "--node", node.url, "--to", CAROL.address, "--amount", "1",
                  "--fee", "0"]
        self.fails(1, "wrong passphrase", *common, env={wallet.PASSPHRASE_ENV: "nope"})
        self.fails(1, "is encrypted", *common, env={})
        self.fails(1, "wrong passphrase", *common, env={}, prompt=lambda text: "nope")
        self.ok(*common, env={}, prompt=lambda text: PASSPHRASE)
        self.assertEqual(len(node.posted()), 1)

    def test_create_unencrypted_says_so(self):
        """An empty passphrase stores the key unencrypted, with a warning on stderr."""
        code, out, err = self.run_wallet("create", "--wallet", self.path, env={wallet.PASSPHRASE_ENV: ""})
        self.assertEqual(code, 0)
        self.assertIn("NOT encrypted", err)
        loaded = wallet.load_wallet(self.path)
        self.assertFalse(loaded.encrypted)
        self.assertEqual(wallet.unlock(loaded, None).address, out.strip())

    def test_no_terminal_and_no_environment_means_unencrypted(self):
        """Without the variable or a terminal, create makes an unencrypted wallet and says so."""
        code, out, err = self.run_wallet("create", "--wallet", self.path, env={})
        self.assertEqual(code, 0)
        self.assertIn("NOT encrypted", err)

    def test_prompted_passphrase(self):
        """At a terminal the passphrase is asked twice; a mismatch is refused and writes nothing."""
        answers = iter(["secret", "secret"])
        self.create(env={}, prompt=lambda text: next(answers))
        self.assertEqual(wallet.unlock(wallet.load_wallet(self.path), "secret").address,
                         wallet.load_wallet(self.path).address)
        other = os.path.join(self.folder, "other.json")
        answers = iter(["secret", "typo"])
        self.fails(1, "do not match", "create", "--wallet", other, env={}, prompt=lambda text: next(answers))
        self.assertFalse(os.path.exists(other))

    def test_end_of_input_at_the_prompt(self):
        """Ctrl-D at a passphrase prompt is one line and exit status 1: create writes nothing, send sends nothing."""
        def eof(text):
            raise EOFError()
        self.fails(1, "no passphrase", "create", "--wallet", self.path, env={}, prompt=eof)
        self.assertFalse(os.path.exists(self.path))
        answers = iter(["secret"])
        self.fails(1, "no passphrase", "create", "--wallet", self.path, env={},
                   prompt=lambda text: next(answers, None) or eof(text))
        self.assertFalse(os.path.exists(self.path))
        self.create(env=self.encrypted)
        node = WalletNode(self)
        node.fund(wallet.load_wallet(self.path).address, 50 * COIN)
        self.fails(1, "no passphrase", "send", "--wallet", self.path, "--node", node.url, "--to", CAROL.address,
                   "--amount", "1", "--fee", "0", env={}, prompt=eof)
        self.assertEqual(node.posted(), [])

    def test_wallet_path_must_name_a_file(self):
        """An empty --wallet or one ending in a slash is a usage error, a folder is refused; create makes nothing."""
        folder_like = os.path.join(self.folder, "sub") + "/"
        for command in ("create", "address"):
            self.fails(2, "--wallet", command, "--wallet", "")
            self.fails(2, "--wallet", command, "--wallet", folder_like)
        self.assertEqual(os.listdir(self.folder), [])
        self.fails(1, "is a folder", "create", "--wallet", self.folder)

    def test_refuses_to_overwrite(self):
        """create leaves an existing file untouched and fails."""
        self.create()
        with open(self.path, "rb") as f:
            before = f.read()
        self.fails(1, "already exists", "create", "--wallet", self.path)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual([n for n in os.listdir(self.folder) if n.endswith(".tmp")], [])

    def test_interrupted_save_leaves_no_copy_of_the_key(self):
        """Ctrl-C while a wallet is written leaves the old file as it was and no temporary copy of the key."""
        self.create()
        with open(self.path, "rb") as f:
            before = f.read()

        class Interrupted(wallet.Wallet):
            def to_json(self):
                raise KeyboardInterrupt()
        loaded = wallet.load_wallet(self.path)
        broken = Interrupted(loaded.path, loaded.address, loaded.key_pem, loaded.encrypted, loaded.created)
        self.assertRaises(KeyboardInterrupt, wallet.save_wallet, broken)
        self.assertEqual(os.listdir(self.folder), ["w.json"])
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), before)

    def test_missing_and_foreign_files(self):
        """A missing wallet file or a file that is not a wallet is one line and exit status 1."""
        self.fails(1, "does not exist", "address", "--wallet", self.path)
        with open(self.path, "w") as f:
            f.write('{"hello": 1}')
        self.fails(1, "not a ChainCore wallet", "address", "--wallet", self.path)
        with open(self.path, "w") as f:
            f.write("not json")
        self.fails(1, "not JSON", "address", "--wallet", self.path)

    def test_bad_options(self):
        """A missing subcommand, an unknown option or a missing --wallet is one line and exit status 2."""
        self.fails(2, "required")
        self.fails(2, "--bogus", "address", "--wallet", self.path, "--bogus")
        self.fails(2, "--wallet", "address")
        self.fails(2, "invalid choice", "steal")


class DamagedWalletTests(CliCase):
    """A wallet file whose JSON parses but whose fields are wrong is refused in one line and left as it is."""

    def setUp(self):
        super().setUp()
        self.address = self.create()
        self.node = WalletNode(self)
        self.node.fund(self.address, 50 * COIN)
        with open(self.path) as f:
            self.good = json.load(f)

    def refused_everywhere(self, content: bytes, text: str):
        with open(self.path, "wb") as f:
            f.write(content)
        for argv in (["address"], ["balance", "--node", self.node.url],
                     ["send", "--node", self.node.url, "--to", CAROL.address, "--amount", "1", "--fee", "0",
                      "--no-broadcast"]):
            self.fails(1, text, argv[0], "--wallet", self.path, *argv[1:])
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), content)
        self.assertEqual(self.node.posted(), [])

    def test_wrong_fields(self):
        """Unconfirmed sends, dates, flags, keys or addresses of the wrong shape are one line each, no traceback."""
        spend = {"tx_id": "ab" * 32, "output_index": 0}
        send = {"tx_id": "cd" * 32, "sent": NOW, "spends": [spend], "transaction": {}}
        for name, value in [("unconfirmed_sends", [{"x": 1}]), ("unconfirmed_sends", "abc"),
                            ("unconfirmed_sends", {"a": 1}), ("unconfirmed_sends", [dict(send, tx_id="zz")]),
                            ("unconfirmed_sends", [dict(send, spends="x")]),
                            ("unconfirmed_sends", [dict(send, spends=[dict(spend, tx_id=5)])]),
                            ("unconfirmed_sends", [dict(send, spends=[dict(spend, output_index=True)])]),
                            ("unconfirmed_sends", [dict(send, transaction=[])]),
                            ("created", float("inf")), ("created", "abc"), ("encrypted", "false"),
                            ("encrypted", None), ("private_key_pem", 5), ("address", 5)]:
            content = json.dumps(dict(self.good, **{name: value})).encode()
            self.refused_everywhere(content, self.path)

    def test_not_a_wallet_at_all(self):
        """JSON that is not an object, and bytes that are not text, are refused as not a wallet file."""
        for content in (b"[]", b'"x"', b"null", b"5", b"\xff\xfe{}"):
            self.refused_everywhere(content, self.path)


class SendTests(CliCase):
    def setUp(self):
        super().setUp()
        self.address = self.create()
        self.node = WalletNode(self)

    def test_send_signs_and_broadcasts(self):
        """send spends the largest coin, pays the amount, returns the change and posts a valid signed tx."""
        self.node.fund(self.address, 30 * COIN)
        big = self.node.fund(self.address, 50 * COIN)
        code, out, err = self.send(self.node, CAROL.address, "10.5", "0.001")
        self.assertEqual(code, 0, err)
        (tx,) = self.node.posted()
        self.assertEqual([i.prev_tx_id.hex() for i in tx.inputs], [big])
        self.assertEqual([(o.address, o.amount) for o in tx.outputs],
                         [(CAROL.address, 1_050_000_000), (self.address, 50 * COIN - 1_050_000_000 - 100_000)])
        self.assertIn(tx.tx_id.hex(), out)
        self.assertEqual([p["tx_id"] for p in wallet.load_wallet(self.path).pending], [tx.tx_id.hex()])

    def test_two_sends_never_spend_one_output(self):
        """A second send before the first confirms uses other coins; a third spends their unconfirmed change."""
        self.node.fund(self.address, 50 * COIN)
        self.node.fund(self.address, 40 * COIN)
        self.assertEqual(self.send(self.node, CAROL.address, "1")[0], 0)
        self.assertEqual(self.send(self.node, CAROL.address, "1")[0], 0)
        first, second = self.node.posted()
        self.assertFalse({i.outpoint for i in first.inputs} & {i.outpoint for i in second.inputs})
        self.assertEqual(self.send(self.node, CAROL.address, "45")[0], 0)
        third = self.node.posted()[2]
        self.assertEqual({i.prev_tx_id for i in third.inputs}, {first.tx_id})  # the 49-coin change
        line = self.fails(1, "insufficient funds", "send", "--wallet", self.path, "--node", self.node.url,
                          "--to", CAROL.address, "--amount", "50", "--fee", "0")
        # the unconfirmed change: 38.9999 + 3.9998 coins
        self.assertIn("have 42.99970000 coins (4,299,970,000 units) spendable", line)
        self.assertEqual(len(self.node.posted()), 3)

    def test_simultaneous_sends_take_turns(self):
        """Two sends started at the same moment from one wallet file never spend the same output."""
        import threading
        for _ in range(4):
            self.node.fund(self.address, 10 * COIN)
        codes = []
        threads = [threading.Thread(target=lambda: codes.append(self.send(self.node, CAROL.address, "9")[0]))
                   for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(codes, [0, 0])
        first, second = self.node.posted()
        self.assertFalse({i.outpoint for i in first.inputs} & {i.outpoint for i in second.inputs})
        self.assertEqual(len(wallet.load_wallet(self.path).pending), 2)

    def test_confirmed_sends_are_forgotten_and_change_is_spendable(self):
        """Once its send confirms, the wallet forgets it and can spend the change."""
        self.node.fund(self.address, 50 * COIN)
        self.assertEqual(self.send(self.node, CAROL.address, "10")[0], 0)
        self.node.confirm()
        self.assertEqual(self.send(self.node, CAROL.address, "10")[0], 0)
        first, second = self.node.posted()
        self.assertEqual([i.prev_tx_id for i in second.inputs], [first.tx_id])
        self.assertEqual([p["tx_id"] for p in wallet.load_wallet(self.path).pending], [second.tx_id.hex()])

    def test_lost_send_is_sent_again(self):
        """A send the node forgot while its inputs are unspent is sent again and stays reserved."""
        self.node.fund(self.address, 50 * COIN)
        self.node.fund(self.address, 40 * COIN)
        self.assertEqual(self.send(self.node, CAROL.address, "1")[0], 0)
        (lost,) = self.node.posted()
        self.node.mempool.clear()
        del self.node.txs[lost.tx_id.hex()]
        self.assertEqual(self.send(self.node, CAROL.address, "1")[0], 0)
        resent, second = self.node.posted()[1:]
        self.assertEqual(resent.tx_id, lost.tx_id)
        self.assertFalse({i.outpoint for i in lost.inputs} & {i.outpoint for i in second.inputs})

    def test_send_whose_inputs_went_elsewhere_is_forgotten(self):
        """A send unknown to the node whose inputs are spent is dropped, releasing nothing twice."""
        self.node.fund(self.address, 50 * COIN)
        self.assertEqual(self.send(self.node, CAROL.address, "1")[0], 0)
        (gone,) = self.node.posted()
        self.node.mempool.clear()
        del self.node.txs[gone.tx_id.hex()]
        self.node.utxos.clear()
        self.node.fund(self.address, 5 * COIN)
        self.assertEqual(self.send(self.node, CAROL.address, "1")[0], 0)
        self.assertEqual(len(self.node.posted()), 2)
        self.assertEqual(len(wallet.load_wallet(self.path).pending), 1)

    def test_no_broadcast_prints_the_signed_transaction(self):
        """--no-broadcast prints the signed transaction JSON, posts nothing and reserves nothing."""
        self.node.fund(self.address, 50 * COIN)
        code, out, err = self.send(self.node, CAROL.address, "2", "0.5", "--no-broadcast")
        self.assertEqual(code, 0, err)
        tx = parse_tx(json.loads(out))
        self.assertEqual(json.loads(out), tx_to_json(tx))
        self.assertEqual([o.amount for o in tx.outputs], [2 * COIN, 47_50_000_000])
        for txin in tx.inputs:
            self.assertTrue(keys.verify(txin.public_key, tx.sighash, txin.signature))
        self.assertEqual(self.node.posted(), [])
        self.assertEqual(wallet.load_wallet(self.path).pending, [])

    def test_immature_coinbase_is_not_spent(self):
        """A coinbase younger than the maturity is skipped; a wallet with nothing else says so."""
        self.node.fund(self.address, 50 * COIN, height=150, coinbase=True)
        line = self.fails(1, "insufficient funds", "send", "--wallet", self.path, "--node", self.node.url,
                          "--to", CAROL.address, "--amount", "1", "--fee", "0")
        self.assertIn("50.00000000 coins in immature coinbases", line)
        young = self.node.fund(self.address, 5 * COIN, height=190)
        self.assertEqual(self.send(self.node, CAROL.address, "1")[0], 0)
        (tx,) = self.node.posted()
        self.assertEqual([i.prev_tx_id.hex() for i in tx.inputs], [young])

    def test_node_flags_spare_lookups(self):
        """With the node's coinbase, mature and spent_in_mempool flags, no /tx lookup is needed."""
        self.node.flags = True
        self.node.fund(self.address, 50 * COIN, height=150, coinbase=True)
        taken = self.node.fund(self.address, 7 * COIN, height=199)
        self.node.mempool["cc" * 32] = {"inputs": [{"tx_id": taken, "output_index": 0}], "outputs": []}
        young = self.node.fund(self.address, 5 * COIN, height=199)
        line = self.fails(1, "insufficient funds", "send", "--wallet", self.path, "--node", self.node.url,
                          "--to", CAROL.address, "--amount", "6", "--fee", "0")
        self.assertIn("have 5.00000000 coins (500,000,000 units) spendable (7.00000000 coins spent by other "
                      "unconfirmed transactions, 50.00000000 coins in immature coinbases)", line)
        self.assertEqual(self.send(self.node, CAROL.address, "1")[0], 0)
        (tx,) = self.node.posted()
        self.assertEqual([i.prev_tx_id.hex() for i in tx.inputs], [young])
        self.assertEqual([r.path for r in self.node.requests if r.path.startswith("/tx/")], [])

    def test_insufficient_funds(self):
        """An amount the coins cannot cover is refused with what the wallet has and needs, in coins and units."""
        self.node.fund(self.address, 3 * COIN)
        line = self.fails(1, "insufficient funds", "send", "--wallet", self.path, "--node", self.node.url,
                          "--to", CAROL.address, "--amount", "3", "--fee", "0.00000001")
        self.assertIn("have 3.00000000 coins (300,000,000 units) spendable, "
                      "need 3.00000001 coins (300,000,001 units) (amount 3.00000000 + fee 0.00000001)", line)

    def test_send_through_a_symbolic_link_writes_the_wallet_it_points_to(self):
        """A wallet reached through a symbolic link is updated where it lives; the link stays a link."""
        self.node.fund(self.address, 50 * COIN)
        link = os.path.join(self.folder, "link.json")
        os.symlink(os.path.basename(self.path), link)
        code, out, err = self.run_wallet("send", "--wallet", link, "--node", self.node.url, "--to", CAROL.address,
                                         "--amount", "1", "--fee", "0.0001")
        self.assertEqual(code, 0, err)
        self.assertTrue(os.path.islink(link))
        (tx,) = self.node.posted()
        self.assertEqual([p["tx_id"] for p in wallet.load_wallet(self.path).pending], [tx.tx_id.hex()])

    def test_zero_value_outputs_are_passed_over(self):
        """Outputs worth nothing (coinbases once the reward has halved away, or a block's gift) do not stop a send."""
        self.node.fund(self.address, 0, coinbase=True)
        coin = self.node.fund(self.address, 5 * COIN)
        self.node.fund(self.address, 0)
        code, out, err = self.send(self.node, CAROL.address, "1")
        self.assertEqual(code, 0, err)
        (tx,) = self.node.posted()
        self.assertEqual([i.prev_tx_id.hex() for i in tx.inputs], [coin])

    def test_fee_over_the_amount_is_refused(self):
        """A fee above the amount (and above 0.01 coin) is taken for a typo: refused unless --allow-high-fee."""
        self.node.fund(self.address, 50 * COIN)
        line = self.fails(1, "--allow-high-fee", "send", "--wallet", self.path, "--node", self.node.url,
                          "--to", CAROL.address, "--amount", "1", "--fee", "2")
        self.assertIn("2.00000000 coins (200,000,000 units)", line)
        self.assertEqual((self.node.posted(), wallet.load_wallet(self.path).pending), ([], []))
        self.assertEqual(self.send(self.node, CAROL.address, "1", "2", "--allow-high-fee")[0], 0)
        self.assertEqual(self.send(self.node, CAROL.address, "0.00000001", "0.0001")[0], 0)  # small, if above
        first, second = self.node.posted()  # the second spends the first's change
        self.assertEqual([50 * COIN - first.output_total, first.outputs[1].amount - second.output_total],
                         [2 * COIN, 10_000])

    def test_no_broadcast_writes_nothing(self):
        """--no-broadcast signs from a wallet it cannot write (no lock file can be made) and leaves the file as is."""
        self.node.fund(self.address, 50 * COIN)
        self.assertEqual(self.send(self.node, CAROL.address, "1")[0], 0)
        self.node.confirm()  # the recorded send is now confirmed: a send would forget it and save
        lock = os.path.realpath(self.path) + ".lock"
        os.remove(lock)
        os.mkdir(lock)  # no lock file can be opened: stands for a read-only folder or medium
        with open(self.path, "rb") as f:
            before = f.read()
        code, out, err = self.send(self.node, CAROL.address, "2", "0.0001", "--no-broadcast")
        self.assertEqual(code, 0, err)
        self.assertEqual(parse_tx(json.loads(out)).outputs[0].amount, 2 * COIN)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(len(self.node.posted()), 1)
        self.fails(1, "cannot lock", "send", "--wallet", self.path, "--node", self.node.url, "--to", CAROL.address,
                   "--amount", "2", "--fee", "0.0001")

    def test_node_refusal_is_one_line_and_releases_the_coins(self):
        """The node's 400 error is printed as one line, and the refused send is not kept."""
        self.node.fund(self.address, 50 * COIN)
        self.node.refusal = "fee too low: 0 below 1 per byte"
        self.fails(1, "fee too low", "send", "--wallet", self.path, "--node", self.node.url,
                   "--to", CAROL.address, "--amount", "1", "--fee", "0")
        self.assertEqual(wallet.load_wallet(self.path).pending, [])

    def test_error_paths(self):
        """Bad addresses, amounts, wallets and nodes: one line each and a non-zero exit."""
        self.node.fund(self.address, 50 * COIN)
        to = CAROL.address
        mistyped = to[:5] + ("2" if to[5] != "2" else "3") + to[6:]
        common = ["--wallet", self.path, "--node", self.node.url]
        self.fails(2, "checksum", "send", *common, "--to", mistyped, "--amount", "1", "--fee", "0")
        self.fails(2, "more than 8 decimal places", "send", *common, "--to", to, "--amount", "1.123456789",
                   "--fee", "0")
        self.fails(2, "plain decimal", "send", *common, "--to", to, "--amount", "1e3", "--fee", "0")
        self.fails(2, "plain decimal", "send", *common, "--to", to, "--amount", "1", "--fee", "-1")
        self.fails(2, "more than zero", "send", *common, "--to", to, "--amount", "0", "--fee", "0")
        self.fails(2, "money supply", "send", *common, "--to", to, "--amount", "21000001", "--fee", "0")
        self.fails(1, "does not exist", "send", "--wallet", self.path + "x", "--node", self.node.url,
                   "--to", to, "--amount", "1", "--fee", "0")
        self.fails(1, "cannot reach the node", "send", "--wallet", self.path, "--node", "http://127.0.0.1:1",
                   "--to", to, "--amount", "1", "--fee", "0")
        self.assertEqual(self.node.posted(), [])


class QueryTests(CliCase):
    def setUp(self):
        super().setUp()
        self.address = self.create()
        self.node = FakeNode(self)

    def test_balance(self):
        """balance prints the node's figures as exact coins, without asking for the passphrase."""
        self.node.answers[("GET", f"/balance/{self.address}")] = (200, {
            "address": self.address, "balance": 5_000_000_001, "confirmed": 5_000_000_000, "unconfirmed": 1})
        out = self.ok("balance", "--wallet", self.path, "--node", self.node.url, env={})
        self.assertIn("confirmed    50.00000000", out)
        self.assertIn("unconfirmed  +0.00000001", out)
        self.assertIn("balance      50.00000001", out)

    def test_balance_of_the_wrong_types_is_malformed(self):
        """Booleans, floats, text or amounts beyond the money supply in /balance are refused, never shown."""
        good = {"address": self.address, "balance": 5, "confirmed": 5, "unconfirmed": 0, "spendable": 5,
                "immature": 0}
        for name, value in [("spendable", True), ("balance", 1.5), ("confirmed", 10 ** 40), ("unconfirmed", "1"),
                            ("immature", -1), ("unconfirmed", -10 ** 40), ("confirmed", None)]:
            self.node.answers[("GET", f"/balance/{self.address}")] = (200, dict(good, **{name: value}))
            self.fails(1, "malformed", "balance", "--wallet", self.path, "--node", self.node.url)

    def test_history(self):
        """history prints one line per transaction with its signed amount and confirmations."""
        self.node.answers[("GET", f"/history/{self.address}")] = (200, {"history": [
            {"tx_id": "aa" * 32, "height": 3, "confirmations": 5, "amount_delta": 50 * COIN},
            {"tx_id": "bb" * 32, "height": None, "confirmations": 0, "amount_delta": -150_000_000}]})
        lines = self.ok("history", "--wallet", self.path, "--node", self.node.url).splitlines()
        self.assertEqual(len(lines), 2)
        self.assertIn("aa" * 32, lines[0])
        self.assertIn("+50.00000000", lines[0])
        self.assertIn("height 3 (5 confirmations)", lines[0])
        self.assertIn("-1.50000000", lines[1])
        self.assertIn("unconfirmed", lines[1])

    def test_node_errors(self):
        """An unreachable node, a node's 4xx error and a malformed answer are one line each, exit status 1."""
        self.fails(1, "cannot reach the node", "balance", "--wallet", self.path, "--node", "http://127.0.0.1:1")
        self.node.answers[("GET", f"/balance/{self.address}")] = (400, {"error": "address fails its checksum"})
        self.fails(1, "address fails its checksum", "balance", "--wallet", self.path, "--node", self.node.url)
        self.fails(1, "(404)", "history", "--wallet", self.path, "--node", self.node.url)
        self.node.answers[("GET", f"/history/{self.address}")] = (200, {"nothing": []})
        self.fails(1, "malformed", "history", "--wallet", self.path, "--node", self.node.url)
