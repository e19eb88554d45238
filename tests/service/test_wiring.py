"""make_node_service: start-up failures are one line, and the advertised URL follows the endpoint."""

import os
import shutil
import subprocess
import tempfile

from twisted.internet import reactor
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from chaincore.service.wiring import make_node_service
from chaincore.service.tap import Options
from tests.support.waiting import free_ports


def options(*args) -> Options:
    o = Options()
    o.parseOptions(["--network", "regtest", "--discover-ports", "", "--datadir", tempfile.mkdtemp()] + list(args))
    return o


def with_datadir(o: Options, datadir: str) -> Options:
    """The same options on another datadir."""
    o["datadir"] = datadir
    return o


def self_signed_pem() -> str:
    """A PEM file holding a new key and its self-signed certificate for localhost (SkipTest without openssl)."""
    if shutil.which("openssl") is None:
        raise SkipTest("openssl is not installed")
    pem = os.path.join(tempfile.mkdtemp(), "node.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", pem, "-out",
                    pem + ".crt", "-days", "1", "-subj", "/CN=localhost"], capture_output=True, check=True)
    with open(pem, "a") as key, open(pem + ".crt") as cert:
        key.write(cert.read())
    return pem


class StartupTests(SynchronousTestCase):
    def test_unreadable_tls_key_is_one_line(self):
        """An ssl: endpoint whose key file is missing ends the start with one line naming the file."""
        err = self.assertRaises(SystemExit, make_node_service, options("--port", "ssl:0:privateKey=/nonexistent.pem"),
                                reactor)
        self.assertIn("/nonexistent.pem", str(err))
        self.assertEqual(len(str(err).splitlines()), 1)

    def test_tls_endpoint_advertises_https(self):
        """A node on an ssl: endpoint advertises an https URL on that port by default."""
        pem = self_signed_pem()
        (port,) = free_ports(1)
        service = make_node_service(options("--port", f"ssl:{port}:privateKey={pem}"), reactor)
        self.addCleanup(service.lock.close)
        self.addCleanup(service.store.close)
        self.assertEqual(service.node.advertise_url, f"https://localhost:{port}")

    def test_plain_port_advertises_localhost(self):
        """CONTRACT 1: --advertise defaults to http://localhost:PORT, and /status reports it as url."""
        (port,) = free_ports(1)
        service = make_node_service(options("--port", str(port)), reactor)
        self.addCleanup(service.lock.close)
        self.addCleanup(service.store.close)
        self.assertEqual(service.node.advertise_url, f"http://localhost:{port}")
        self.assertEqual(service.node.status()["url"], f"http://localhost:{port}")

    def test_advertise_option_wins(self):
        """An explicit --advertise is what the node tells its peers (a trailing slash dropped)."""
        (port,) = free_ports(1)
        service = make_node_service(options("--port", str(port), "--advertise", "http://node.example:8080/"),
                                    reactor)
        self.addCleanup(service.lock.close)
        self.addCleanup(service.store.close)
        self.assertEqual(service.node.status()["url"], "http://node.example:8080")

    def test_second_node_on_one_datadir_is_refused(self):
        """While a node holds a datadir, another start on it ends with one line; once closed, it may start."""
        first_options = options("--port", str(free_ports(1)[0]))
        first = make_node_service(first_options, reactor)
        self.addCleanup(first.store.close)
        err = self.assertRaises(SystemExit, make_node_service,
                                with_datadir(options("--port", str(free_ports(1)[0])), first_options["datadir"]),
                                reactor)
        self.assertIn("is in use by another node", str(err))
        self.assertEqual(len(str(err).splitlines()), 1)
        first.lock.close()
        second = make_node_service(with_datadir(options("--port", str(free_ports(1)[0])), first_options["datadir"]),
                                   reactor)
        second.store.close()
        second.lock.close()


class TLSTests(TestCase):
    def test_tls_endpoint_talks_to_clients_that_offer_alpn(self):
        """A node on an ssl: endpoint completes the handshake with a client offering ALPN (h2 and http/1.1, as
        curl does), chooses http/1.1, and answers /status: the connection guard around the site had offered
        no protocol, and every such client got an internal-error alert."""
        import socket
        import ssl
        from twisted.internet.endpoints import serverFromString
        from twisted.internet.threads import deferToThread
        from twisted.web.resource import Resource
        from twisted.web.static import Data
        from chaincore.api.guard import guard
        from chaincore.api.site import make_site
        pem = self_signed_pem()
        root = Resource()
        root.putChild(b"status", Data(b'{"ok": true}', "application/json"))
        port = self.successResultOf(serverFromString(
            reactor, f"ssl:0:privateKey={pem}:interface=127.0.0.1").listen(guard(make_site(root), reactor)))
        self.addCleanup(port.stopListening)

        def ask():
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            context.set_alpn_protocols(["h2", "http/1.1"])
            with socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"GET /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    answer = b""
                    while chunk := tls.recv(65536):
                        answer += chunk
                    return tls.selected_alpn_protocol(), answer

        return deferToThread(ask).addCallback(self._check_alpn_answer)

    def _check_alpn_answer(self, result):
        chosen, answer = result
        self.assertEqual(chosen, "http/1.1")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:80])
        self.assertIn(b'{"ok": true}', answer)
