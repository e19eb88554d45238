"""PeerTable: backoff, bans, bounds, self- and duplicate-detection, persistence (pure, no reactor)."""

import json
import os

from twisted.trial.unittest import SynchronousTestCase

from chaincore.core.errors import BadMerkleRoot, BadProofOfWork, BadSignature, FeeTooLow, Malformed, TimeTooNew
from chaincore.p2p import peerfile
from chaincore.p2p.peers import (BAN_S, BAN_THRESHOLD, PENALTIES, REFUSED_RETRY_S, PeerTable, backoff_s,
                                 normalise_url, penalty_for)

A, B, C = "http://localhost:5001", "http://localhost:5002", "http://localhost:5003"


class PenaltyTests(SynchronousTestCase):
    def test_penalties_by_code(self):
        """Invalid blocks cost 50, invalid transactions 10, malformed data 20; policy refusals nothing."""
        self.assertEqual(penalty_for(BadProofOfWork.code), 50)
        self.assertEqual(penalty_for(BadMerkleRoot.code), 50)
        self.assertEqual(penalty_for(BadSignature.code), 10)
        self.assertEqual(penalty_for(Malformed.code), 20)
        self.assertEqual(penalty_for(FeeTooLow.code), 0)
        self.assertEqual(penalty_for(TimeTooNew.code), 0)
        for code in ("too-many-ancestors", "ancestors-too-large", "too-many-descendants", "descendants-too-large",
                     "mempool-chain-limit", "rate-limited"):
            self.assertEqual(penalty_for(code), 0, code)  # policy and budgets, not misbehaviour
        self.assertEqual(penalty_for("peer-unreachable"), 0)
        self.assertEqual(penalty_for("no-such-code"), 0)

    def test_every_error_code_has_an_entry(self):
        """The map covers every code of the error tree, so no rule is forgotten silently."""
        self.assertIn("bad-pow", PENALTIES)
        self.assertIn("double-spend", PENALTIES)
        self.assertIn("bad-address", PENALTIES)
        self.assertEqual(PENALTIES["bad-address"], 20)

    def test_table_does_not_depend_on_import_order(self):
        """Every class of core/errors.py has its entry, faults (store, peer-unreachable) cost nothing,
        whatever modules were imported before the table was built."""
        from chaincore.core import errors  # the module itself, to list what it defines
        defined = {c.code for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.ChainCoreError)}
        self.assertEqual(set(PENALTIES), defined)
        self.assertEqual((PENALTIES["store"], PENALTIES["peer-unreachable"], PENALTIES["unavailable"]), (0, 0, 0))

    def test_backoff_doubles_and_caps(self):
        """Retries wait 2, 4, 8 ... seconds, never more than 300."""
        self.assertEqual([backoff_s(n) for n in range(1, 6)], [2, 4, 8, 16, 32])
        self.assertEqual(backoff_s(9), 300)
        self.assertEqual(backoff_s(1000), 300)


class UrlTests(SynchronousTestCase):
    def test_normalise(self):
        """Base URLs lose a trailing slash and upper case in scheme and host."""
        self.assertEqual(normalise_url("HTTP://LocalHost:5001/"), "http://localhost:5001")

    def test_refuses_non_base_urls(self):
        """Paths, credentials, other schemes and bad ports are not peer URLs."""
        for bad in ["ftp://x:1", "http://x:1/status", "http://u@x:1", "localhost:5001", "http://x:99999",
                    "http://", 5001, "http://" + "a" * 300]:
            self.assertRaises(Malformed, normalise_url, bad)


class TableTests(SynchronousTestCase):
    def setUp(self):
        self.table = PeerTable("me", ["http://localhost:5000"])

    def test_candidate_becomes_active(self):
        """An added URL is due at once, and active after a good probe."""
        self.assertTrue(self.table.add(A, now=10))
        self.assertFalse(self.table.add(A + "/", now=10))
        self.assertEqual(self.table.due_for_probe(10), [A])
        self.assertEqual(self.table.active_urls(), [])
        self.assertEqual(self.table.mark_alive(A, "node-a", now=10), "added")
        self.assertEqual(self.table.mark_alive(A, "node-a", now=50), "alive")
        self.assertEqual(self.table.active_urls(), [A])

    def test_own_url_and_node_id_are_never_added(self):
        """The node's own URL is refused, and a URL answering with our node_id is dropped for good."""
        self.assertFalse(self.table.add("http://localhost:5000", now=0))
        self.table.add("http://127.0.0.1:5000", now=0)
        self.assertEqual(self.table.mark_alive("http://127.0.0.1:5000", "me", now=0), "self")
        self.assertNotIn("http://127.0.0.1:5000", self.table)
        self.assertFalse(self.table.add("http://127.0.0.1:5000", now=1))

    def test_same_node_under_two_urls_is_kept_once(self):
        """A second URL answering with a known node_id is remembered as an alias, not a second peer."""
        self.table.add(A, 0)
        self.table.add("http://127.0.0.1:5001", 0)
        self.assertEqual(self.table.mark_alive(A, "node-a", 0), "added")
        self.assertEqual(self.table.mark_alive("http://127.0.0.1:5001", "node-a", 0), "duplicate")
        self.assertEqual(self.table.active_urls(), [A])
        self.assertFalse(self.table.add("http://127.0.0.1:5001", 5))

    def test_failures_back_off_exponentially(self):
        """Each failure leaves the active set and pushes the next probe 2, 4, 8 s ahead; success resets."""
        self.table.add(A, 0)
        self.table.mark_alive(A, "node-a", 0)
        self.assertTrue(self.table.record_failure(A, now=100))
        self.assertEqual(self.table.active_urls(), [])
        self.assertEqual(self.table.next_probe_at(A), 102)
        self.assertEqual(self.table.due_for_probe(101.9), [])
        self.assertEqual(self.table.due_for_probe(102), [A])
        self.assertFalse(self.table.record_failure(A, now=102))
        self.assertEqual(self.table.next_probe_at(A), 106)
        self.table.record_failure(A, now=106)
        self.assertEqual(self.table.next_probe_at(A), 114)
        self.table.mark_alive(A, "node-a", 114)
        self.table.record_failure(A, now=200)
        self.assertEqual(self.table.next_probe_at(A), 202)

    def test_active_peer_is_rechecked(self):
        """An active peer is due again recheck_s after its last good probe."""
        table = PeerTable("me", recheck_s=30)
        table.add(A, 0)
        table.mark_alive(A, "node-a", 0)
        self.assertEqual(table.due_for_probe(29), [])
        self.assertEqual(table.due_for_probe(30), [A])

    def test_a_poll_answered_as_itself_counts_as_a_probe(self):
        """A poll an active peer answers with its own node_id moves its next probe recheck_s ahead; an answer
        from another node_id, or of an inactive peer, does not."""
        table = PeerTable("me", recheck_s=30)
        table.add(A, 0)
        self.assertFalse(table.answered(A, "node-a", 5))  # not active yet: discovery probes it
        table.mark_alive(A, "node-a", 0)
        self.assertFalse(table.answered(A, "node-x", 20))
        self.assertEqual(table.next_probe_at(A), 30)
        self.assertTrue(table.answered(A, "node-a", 25))
        self.assertEqual(table.due_for_probe(54), [])
        self.assertEqual(table.due_for_probe(55), [A])

    def test_refused_peer_waits_an_hour(self):
        """A node of another network is refused, reported once, and probed again only after an hour."""
        self.table.add(A, 0)
        self.assertTrue(self.table.refuse(A, "network main", now=0))
        self.assertFalse(self.table.refuse(A, "network main", now=0))
        self.assertEqual(self.table.known_urls(), [])
        self.assertEqual(self.table.due_for_probe(REFUSED_RETRY_S - 1), [])
        self.assertEqual(self.table.due_for_probe(REFUSED_RETRY_S), [A])

    def test_ban_after_threshold_and_expiry(self):
        """Penalties add up to a ban at 100; the banned URL and node are refused until the ban ends."""
        self.table.add(A, 0)
        self.table.mark_alive(A, "node-a", 0)
        self.assertFalse(self.table.penalise(A, "bad-pow", now=10))
        self.assertFalse(self.table.is_banned(A, 10))
        self.assertTrue(self.table.penalise(A, "bad-merkle-root", now=20))
        self.assertTrue(self.table.is_banned(A, 20))
        self.assertEqual(self.table.active_urls(), [])
        self.assertFalse(self.table.add(A, 30))
        self.table.add(B, 30)
        self.assertEqual(self.table.mark_alive(B, "node-a", 30), "banned")
        self.assertFalse(self.table.is_banned(A, 20 + BAN_S))
        self.assertTrue(self.table.add(A, 20 + BAN_S))
        self.assertEqual(self.table.mark_alive(A, "node-a", 20 + BAN_S), "added")
        self.assertEqual(self.table.get(A).score, 0)

    def test_small_penalties_do_not_ban(self):
        """Nine bad transactions (90 points) are not enough for a ban; the tenth is."""
        self.table.add(A, 0)
        for _ in range(9):
            self.assertFalse(self.table.penalise(A, "bad-signature", 0))
        self.assertEqual(self.table.get(A).score, BAN_THRESHOLD - 10)
        self.assertTrue(self.table.penalise(A, "bad-signature", 0))

    def test_table_is_bounded_and_evicts_the_worst(self):
        """At the bound, a new URL evicts the inactive peer with the most failures; active peers stay."""
        table = PeerTable("me", max_known=3)
        table.add(A, 0)
        table.add(B, 0)
        table.add(C, 0)
        table.mark_alive(A, "node-a", 0)
        table.record_failure(B, 0)
        table.record_failure(B, 2)
        table.record_failure(C, 0)
        self.assertTrue(table.add("http://localhost:5004", 5))
        self.assertEqual(len(table), 3)
        self.assertNotIn(B, table)
        self.assertIn(A, table)
        self.assertIn(C, table)

    def test_full_table_of_active_peers_refuses_newcomers(self):
        """When every known peer is active, a new URL is not added."""
        table = PeerTable("me", max_known=2)
        for url, node in [(A, "a"), (B, "b")]:
            table.add(url, 0)
            table.mark_alive(url, node, 0)
        self.assertFalse(table.add(C, 0))
        self.assertEqual(len(table), 2)


class PersistenceTests(SynchronousTestCase):
    def filled_table(self):
        table = PeerTable("me")
        for url in (A, B, C):
            table.add(url, 0)
        table.mark_alive(A, "node-a", 0)
        table.record_failure(B, 0)
        table.refuse(C, "network main", 0)
        table.add("http://localhost:5009", 0)
        table.mark_alive("http://localhost:5009", "node-bad", 0)
        table.ban("http://localhost:5009", now=0)
        return table

    def test_round_trip(self):
        """A table survives to_json/json/from_json: peers, node ids, failures, refusals and bans."""
        obj = json.loads(json.dumps(self.filled_table().to_json()))
        table = PeerTable.from_json(obj, now=100, own_node_id="me")
        self.assertEqual(table.known_urls(), [A, B])
        self.assertEqual(table.active_urls(), [])
        self.assertEqual(table.get(A).node_id, "node-a")
        self.assertEqual(table.get(B).failures, 1)
        self.assertEqual(table.due_for_probe(100), [A, B])
        self.assertEqual(table.next_probe_at(C), REFUSED_RETRY_S)
        self.assertTrue(table.is_banned("http://localhost:5009", 100))
        self.assertFalse(table.is_banned("http://localhost:5009", BAN_S))

    def test_bad_shapes(self):
        """A file that is not a version 1 table is Malformed; bad entries inside one are skipped."""
        self.assertRaises(Malformed, PeerTable.from_json, [], 0)
        self.assertRaises(Malformed, PeerTable.from_json, {"version": 2, "peers": []}, 0)
        table = PeerTable.from_json({"version": 1, "peers": [{"url": "ftp://x"}, {"nourl": 1}, {"url": A}]}, 0)
        self.assertEqual(table.known_urls(), [A])

    def test_file_round_trip(self):
        """save_table writes atomically (no temporary file left) and load_table reads it back."""
        path = self.mktemp()
        peerfile.save_table(path, self.filled_table())
        self.assertFalse(os.path.exists(path + ".tmp"))
        self.assertEqual(peerfile.load_table(path, 100, "me").known_urls(), [A, B])

    def test_missing_or_garbage_file_gives_an_empty_table(self):
        """A missing or corrupt peer file gives an empty table, not a crash."""
        path = self.mktemp()
        self.assertEqual(len(peerfile.load_table(path, 0, "me")), 0)
        with open(path, "w") as f:
            f.write("{not json")
        self.assertEqual(len(peerfile.load_table(path, 0, "me")), 0)
        self.flushLoggedErrors()
