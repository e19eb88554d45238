"""Relay against peers that lie or flood, and what each block's first trip costs: the compact form pushed to
every peer by the node a block starts at, transaction ids in bytes, a block fetched from another announcer
when the first never serves it or serves a form that does not fit, junk ids and floods of announcements."""

import dataclasses

from chaincore.core import compact as compact_blocks
from chaincore.core.block import Block, HEADER_SIZE
from tests.support.api import funded_chain
from tests.support.builders import ALICE, BOB, make_block, solve
from tests.support.nodes import settled

from .fakes import NodePeer
from .test_compact_relay import payments
from .test_sync import ME, SyncTestCase, url


def pushed(peer: NodePeer) -> list:
    """For each binary announcement peer received: True if it carried the compact form, False for a header."""
    return [len(body["bytes"]) > HEADER_SIZE for path, body in peer.posted if path == "/announce" and "bytes" in body]


class PushTests(SyncTestCase):
    def test_a_block_made_here_pushes_its_compact_form_to_every_peer_a_relayed_one_to_those_that_asked(self):
        """A block mined here (or first submitted by a client) goes to all five peers as its compact form; a
        block relayed from a peer goes as the compact form to the peers that asked for it (at most
        compact_push of them), as a header to the rest."""
        chain = funded_chain()
        peers = [self.peer(5001 + i, chain) for i in range(5)]
        me = self.me(chain, *peers)
        mined = make_block(chain[-1], pay_to=BOB)
        settled(me.node.submit_block(mined, local=True))
        self.assertEqual([pushed(p) for p in peers], [[True]] * 5)
        for p in peers:
            p.posted.clear()
        me.relay.push_to.update(p.url for p in peers[:4])
        me.relay.compact_push = 2
        relayed = make_block(mined, pay_to=BOB)
        settled(me.node.submit_block(relayed, source=peers[0].url))
        self.assertEqual(pushed(peers[0]), [])
        self.assertEqual(sorted(x for p in peers[1:] for x in pushed(p)), [False, False, True, True])
        self.assertEqual(pushed(peers[4]), [False])  # it never asked

    def test_the_peer_that_delivered_a_block_first_is_asked_to_push_the_next(self):
        """A block announced with its header alone costs a fetch; the receiver then asks its announcer to push
        compact forms (POST /send_compact, one byte), and the next block arrives in one trip.  When others
        deliver first, it asks it to stop."""
        a, b = self.pair()
        a.relay.origin_push_all = False  # a relays every block as if it came from elsewhere
        first = make_block(funded_chain()[-1], pay_to=BOB)
        settled(a.node.submit_block(first, local=True))
        self.assertEqual((b.tip(), pushed(b)), (first.hash, [False]))
        self.assertEqual(a.count(f"/compact/{first.hash.hex()}"), 1)
        self.assertEqual([body for path, body in a.posted if path == "/send_compact"], [{"bytes": b"\x01"}])
        self.assertIn(b.url, a.relay.push_to)
        second = make_block(first, pay_to=BOB)
        settled(a.node.submit_block(second, local=True))
        self.assertEqual((b.tip(), pushed(b)), (second.hash, [False, True]))
        self.assertEqual(a.count(f"/compact/{second.hash.hex()}"), 0)
        self.assertEqual(a.count("/send_compact", "POST"), 1)  # said once, not at every block
        b.relay.push_from = 1
        b.relay.delivered_first(url(5009))  # someone else (gone: nobody answers there) was first lately
        self.assertNotIn(b.url, a.relay.push_to)
        third = make_block(second, pay_to=BOB)
        settled(a.node.submit_block(third, local=True))
        self.assertEqual((b.tip(), pushed(b)[-1]), (third.hash, False))
        b.relay.push_wished(a.url, True)
        a.service.peers._peer_lost(b.url)
        self.assertNotIn(b.url, a.relay.push_to)

    def test_send_compact_needs_a_sender_naming_itself(self):
        """A choice with no X-ChainCore-Peer, or one naming another host, is refused (400) and taken for
        nobody; the sender naming itself is taken."""
        from tests.support.api import APIClient
        a, _ = self.pair()
        client = APIClient(self, a.service)
        octets = "application/octet-stream"
        for headers in ({}, {"X-ChainCore-Peer": "http://10.0.0.5:5001"}):
            answer = client.request("POST", "/send_compact", data=b"\x01", headers=headers, content_type=octets)
            self.assertEqual(answer.status, 400, headers)
        self.assertEqual(a.relay.push_to, set())
        answer = client.request("POST", "/send_compact", data=b"\x01", content_type=octets,
                                headers={"X-ChainCore-Peer": "http://127.0.0.1:5009"})
        self.assertEqual((answer.status, a.relay.push_to), (204, {"http://127.0.0.1:5009"}))

    def test_wishes_for_pushes_are_bounded(self):
        """A host naming itself at many ports cannot grow the set of push wishes without end: past the bound,
        wishes of peers that are not relay peers are dropped, and a new one finds no room."""
        from chaincore.p2p.relay import MAX_PUSH_TO
        a, b = self.pair()
        for port in range(6000, 6000 + MAX_PUSH_TO + 50):
            a.relay.push_wished(url(port), True)
        self.assertLessEqual(len(a.relay.push_to), MAX_PUSH_TO)
        a.relay.push_wished(b.url, True)  # a relay peer: room is made for it
        self.assertIn(b.url, a.relay.push_to)
        self.assertLessEqual(len(a.relay.push_to), MAX_PUSH_TO)

    def test_send_compact_refuses_anything_but_one_byte_or_a_boolean(self):
        """POST /send_compact takes 1 or 0 as one byte, or {"push": bool}; anything else is a 400, nothing
        taken."""
        a, b = self.pair()
        for body in (b"", b"\x02", b"\x01\x01"):
            code, answer = self.successResultOf(b.client.post_binary(a.url, "/send_compact", body))
            self.assertEqual(code, 400, body)
        code, answer = self.successResultOf(b.client.post_json(a.url, "/send_compact", {"push": "yes"}))
        self.assertEqual(code, 400)
        self.assertNotIn(b.url, a.relay.push_to)
        code, answer = self.successResultOf(b.client.post_json(a.url, "/send_compact", {"push": True}))
        self.assertEqual((code, answer), (200, {"push": True}))
        self.assertIn(b.url, a.relay.push_to)

    def test_a_block_made_here_carries_the_transactions_a_peer_was_never_told_of(self):
        """The compact form a block's first node pushes holds in full the transactions a peer was never told of
        (and only those): the peer rebuilds the block in one trip, asking for nothing."""
        a, b = self.pair()
        txs = payments(3)
        settled(a.node.submit_tx(txs[0]))
        self.clock.pump([0.05] * 3)
        self.assertIn(txs[0].tx_id, b.node.mempool)
        block = make_block(funded_chain()[-1], txs, pay_to=BOB)
        settled(a.node.submit_block(block, local=True))
        self.assertEqual(b.tip(), block.hash)
        self.assertEqual([body["bytes"] for path, body in b.posted if path == "/announce"],
                         [compact_blocks.compact_to_bytes(block, prefill=[2, 3])])
        self.assertEqual((a.count("/block_txs", "POST"), a.count(f"/compact/{block.hash.hex()}")), (0, 0))
        self.assertEqual(b.relay.counts.compact_rebuilt, 1)


    def test_peers_a_block_made_here_went_to_do_not_announce_it_to_each_other(self):
        """In a mesh of four relaying nodes, a block mined on one reaches the other three with the tags of all
        three (X-ChainCore-Sent-To), so none announces it to another: three announcements in all, not nine."""
        chain = funded_chain()
        urls = [url(5001 + i) for i in range(4)]
        nodes = [self.network.add(NodePeer(u, self.clock, chain, network=self.network, seeds=[v for v in urls if v != u]))
                 for u in urls]
        for node in nodes:
            self.successResultOf(node.discovery.run_once())
        self.assertEqual([len(n.discovery.relay_peers()) for n in nodes], [3] * 4)
        block = make_block(chain[-1], pay_to=BOB)
        settled(nodes[0].node.submit_block(block, local=True))
        self.assertEqual({n.tip() for n in nodes}, {block.hash})
        self.assertEqual([n.count("/announce", "POST") for n in nodes], [0, 1, 1, 1])
        relayed = make_block(block, pay_to=BOB)   # a block relayed, not made here, is announced as before
        settled(nodes[1].node.submit_block(relayed, source=nodes[0].url))
        self.assertEqual({n.tip() for n in nodes[1:]}, {relayed.hash})

    def test_a_relayer_names_on_whom_the_block_went_to(self):
        """O -> R -> {X, Y}, with X and Y peers of each other: R relays O's block to X and Y naming both (and
        what O named), so X does not announce it to Y nor Y to X."""
        chain = funded_chain()
        o, r, x, y = (url(5001 + i) for i in range(4))
        links = {o: [r], r: [o, x, y], x: [r, y], y: [r, x]}
        nodes = {u: self.network.add(NodePeer(u, self.clock, chain, network=self.network, seeds=links[u]))
                 for u in links}
        for node in nodes.values():
            node.discovery._exchange_limit = 0  # no peers learnt by exchange: the links above stay the mesh
        for node in nodes.values():
            self.successResultOf(node.discovery.run_once())
        self.assertEqual({u: set(nodes[u].discovery.relay_peers()) for u in links},
                         {u: set(v) for u, v in links.items()})
        block = make_block(chain[-1], pay_to=BOB)
        settled(nodes[o].node.submit_block(block, local=True))
        self.assertEqual({n.tip() for n in nodes.values()}, {block.hash})
        self.assertEqual([nodes[u].count("/announce", "POST") for u in (o, r, x, y)], [0, 1, 1, 1])

    def test_a_sent_to_header_that_is_not_a_list_of_tags_is_ignored(self):
        """Junk in X-ChainCore-Sent-To (too many tags, wrong lengths, not hex) is no hint: the announcement is
        still taken and the node still announces the block to its other peers."""
        from chaincore.core.compact import peer_tag
        chain = funded_chain()
        a, b = self.peer(5001, chain), self.peer(5002, chain)
        me = self.me(chain, a, b)
        sender = self.network.add(NodePeer(url(5003), self.clock, chain, network=self.network))
        parent = chain[-1]
        for n, junk in enumerate((",".join([peer_tag(b.url)] * 65), peer_tag(b.url) + "0", "zzzzzzzz", None)):
            block = make_block(parent, pay_to=BOB)
            hint = junk if junk is not None else peer_tag(a.url)
            code, _ = self.successResultOf(sender.client.post_binary(
                ME, "/announce", compact_blocks.compact_to_bytes(block),
                headers={b"X-ChainCore-Sent-To": [hint.encode()]}))
            self.assertEqual((code, me.tip()), (204, block.hash))
            parent = block
        # the three junk hints named b and were ignored; the last names a well, but comes from a stranger
        self.assertEqual((a.count("/announce", "POST"), b.count("/announce", "POST")), (4, 4))

    def test_a_strangers_sent_to_spares_nobody_a_relay_peers_does(self):
        """X-ChainCore-Sent-To is taken only from a peer we relay with: a stranger naming all our peers does not
        keep the block from them, while the same hint from a relay peer spares the peer it names."""
        from chaincore.core.compact import peer_tag
        chain = funded_chain()
        a, b = self.peer(5001, chain), self.peer(5002, chain)
        me = self.me(chain, a, b)
        stranger = self.network.add(NodePeer(url(5003), self.clock, chain, network=self.network))
        hint = f"{peer_tag(a.url)},{peer_tag(b.url)}".encode()
        block = make_block(chain[-1], pay_to=BOB)
        code, _ = self.successResultOf(stranger.client.post_binary(
            ME, "/announce", compact_blocks.compact_to_bytes(block), headers={b"X-ChainCore-Sent-To": [hint]}))
        self.assertEqual((code, me.tip()), (204, block.hash))
        self.assertEqual((a.count("/announce", "POST"), b.count("/announce", "POST")), (1, 1))
        self.assertIn(a.url, me.discovery.relay_peers())
        after = make_block(block, pay_to=BOB)
        for held in (block, after):
            settled(a.node.submit_block(held, source=ME))
        me.relay.announced(a.url, after.header, sent_to={peer_tag(b.url)})  # as its /announce hands it on
        self.network.flush()
        self.assertEqual(me.tip(), after.hash)
        self.assertEqual(b.count("/announce", "POST"), 1)  # spared: a said it sent the block there


class LiarAndHonestCase(SyncTestCase):
    """Our node with two peers on the funded chain: a liar, and an honest one that holds self.block too."""

    def setUp(self):
        super().setUp()
        self.block = make_block(funded_chain()[-1], payments(2), pay_to=BOB)
        self.liar = self.network.add(NodePeer(url(5001), self.clock, funded_chain(), network=self.network))
        self.honest = self.network.add(NodePeer(url(5002), self.clock, funded_chain() + (self.block,),
                                                network=self.network))
        self.me = self.me(funded_chain(), self.liar, self.honest)


class LiarTests(LiarAndHonestCase):

    def announce(self, sender: NodePeer, body: bytes) -> int:
        code, _ = self.successResultOf(sender.client.post_binary(ME, "/announce", body))
        return code

    def test_a_block_announced_and_never_served_is_fetched_from_another_announcer(self):
        """A peer that announces a block and never answers for its compact form delays it by one deadline: the
        block then comes from the peer that announced it meanwhile, and the silent peer stays active."""
        self.liar.stalled.add(f"/compact/{self.block.hash.hex()}")
        self.assertEqual(self.announce(self.liar, self.block.header.raw), 204)
        self.assertEqual(self.announce(self.honest, self.block.header.raw), 204)
        self.assertEqual(self.honest.count(f"/compact/{self.block.hash.hex()}"), 0)
        self.clock.advance(6)   # past the 5 s deadline of the fetch from the liar
        self.assertEqual(self.me.tip(), self.block.hash)
        self.assertEqual(self.honest.count(f"/compact/{self.block.hash.hex()}"), 1)
        self.assertIn(self.liar.url, self.me.discovery.active_peers())

    def test_a_compact_form_that_does_not_fit_its_header_is_never_submitted(self):
        """A compact form whose transactions do not hash to its header's merkle root (the header's proof of
        work valid) is caught before validation: the whole block is asked for, and a different block in
        answer is penalised as malformed; the block is then fetched from the honest announcer."""
        for tx in self.block.transactions[1:]:
            settled(self.me.node.submit_tx(tx))
        lying = solve(dataclasses.replace(self.block.header, merkle_root=b"\x07" * 32))
        forged = compact_blocks.compact_to_bytes(Block(lying, self.block.transactions))
        self.liar.canned[f"/block/{lying.hash.hex()}"] = lambda request: (200, self.block.raw)
        self.assertEqual(self.announce(self.liar, forged), 204)
        self.assertEqual(self.me.relay.counts.full_fallbacks, 1)
        self.assertEqual(self.liar.count(f"/block/{lying.hash.hex()}"), 1)
        self.assertFalse(self.me.node.chain.has_block(lying.hash))
        self.assertGreater(self.me.discovery.table.get(self.liar.url).score, 0)
        self.assertEqual(self.announce(self.honest, compact_blocks.compact_to_bytes(self.block)), 204)
        self.assertEqual(self.me.tip(), self.block.hash)

    def test_junk_transaction_ids_are_refused_or_asked_once(self):
        """Ids that are not whole 32-byte strings are answered 400, too many 413; well-formed ids nobody has
        are asked of the announcer once (in bytes), add nothing, and are not asked again soon."""
        client = self.liar.client
        for junk in (b"\x01" * 33, b"\x01" * 31):
            code, answer = self.successResultOf(client.post_binary(ME, "/announce_txs", junk))
            self.assertEqual(code, 400)
            self.assertIn("32-byte", answer["error"])
        code, _ = self.successResultOf(client.post_binary(ME, "/announce_txs", b"\x02" * 32 * 5001))
        self.assertEqual(code, 413)
        ids = b"\x03" * 32 + b"\x04" * 32
        for _ in range(3):
            code, answer = self.successResultOf(client.post_binary(ME, "/announce_txs", ids))
            self.assertEqual((code, answer), (204, {}))
        self.assertEqual(self.liar.count("/txs", "POST"), 1)
        self.assertEqual([body for path, body in self.liar.posted if path == "/txs"],
                         [{"tx_ids": ["03" * 32, "04" * 32]}])
        self.assertEqual(len(self.me.node.mempool), 0)

    def test_a_flood_of_announcements_costs_one_fetch_and_bad_work_gets_banned(self):
        """The same header announced fifty times starts one fetch; headers whose proof of work fails get the
        announcer penalised until it is banned, and none is fetched."""
        self.liar.stalled.add(f"/compact/{self.block.hash.hex()}")
        for _ in range(50):
            self.announce(self.liar, self.block.header.raw)
        self.assertEqual(self.liar.count(f"/compact/{self.block.hash.hex()}"), 1)
        bad = [h for h in (self.block.header.with_nonce(n) for n in range(200)) if not h.has_valid_pow][:10]
        self.assertEqual(len(bad), 10)
        for header in bad:
            self.announce(self.liar, header.raw)
            if self.liar.url not in self.me.discovery.active_peers():
                break
        self.assertNotIn(self.liar.url, self.me.discovery.active_peers())
        self.assertEqual([p for m, p in self.liar.requests if p.startswith("/compact/")],
                         [f"/compact/{self.block.hash.hex()}"])


class BinaryIdTests(SyncTestCase):
    def test_transaction_ids_travel_as_32_bytes_each(self):
        """A transaction announced and fetched between two nodes costs 32 bytes of request body each way: its
        id in bytes to /announce_txs, then to /txs."""
        a, b = self.pair()
        tx = payments(1)[0]
        sent_a, sent_b = a.client.bytes_sent(b.url), b.client.bytes_sent(a.url)
        settled(a.node.submit_tx(tx))
        self.clock.pump([0.05] * 3)
        self.assertIn(tx.tx_id, b.node.mempool)
        self.assertEqual((a.client.bytes_sent(b.url) - sent_a, b.client.bytes_sent(a.url) - sent_b), (32, 32))
        self.assertEqual([body for path, body in a.posted if path == "/txs"], [{"tx_ids": [tx.tx_id.hex()]}])


class PrefillTests(SyncTestCase):
    def test_prefilled_transactions_parse_back_in_their_slots(self):
        """A compact form with transactions 2 and 3 prefilled parses back to them in full at their indexes, the
        others as short ids, and reconstruction with an empty mempool lacks only those."""
        block = make_block(funded_chain()[-1], payments(4), pay_to=BOB)
        parsed = compact_blocks.parse_compact_bytes(compact_blocks.compact_to_bytes(block, prefill=[3, 2, 9]),
                                                    10 ** 6)
        self.assertEqual([not isinstance(s, bytes) for s in parsed.slots], [True, False, True, True, False])
        self.assertEqual(parsed.slots[2:4], block.transactions[2:4])
        self.assertEqual(compact_blocks.reconstruct(parsed, []).missing, (1, 4))
