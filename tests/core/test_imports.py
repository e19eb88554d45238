"""The consensus core stays pure: no Twisted, no I/O, no clock (STYLE 1)."""

import ast
import pathlib

from twisted.trial.unittest import SynchronousTestCase

import chaincore.core

CORE = pathlib.Path(chaincore.core.__file__).parent
FORBIDDEN_MODULES = {"twisted", "klein", "treq", "sqlite3", "socket", "asyncio", "requests", "urllib",
                     "http", "time", "datetime", "subprocess", "threading", "multiprocessing", "select"}
FORBIDDEN_CALLS = {"open", "input", "print"}


def violations(source: str) -> list:
    """Names of forbidden imports and calls in source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            if (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
                found.append(node.module)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
            found.append(node.func.id + "()")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
            found.append("__import__()")
    return found


class CoreImportTests(SynchronousTestCase):
    def test_core_modules_are_pure(self):
        """No module of chaincore.core imports Twisted, sockets, sqlite3 or the clock, or does file I/O."""
        modules = sorted(CORE.glob("*.py"))
        self.assertGreater(len(modules), 5)
        for path in modules:
            self.assertEqual(violations(path.read_text()), [], f"{path.name} breaks the core's purity")

    def test_checker_catches_forbidden_imports(self):
        """The checker itself spots each kind of forbidden import and call."""
        self.assertEqual(violations("import twisted.internet"), ["twisted.internet"])
        self.assertEqual(violations("from sqlite3 import connect"), ["sqlite3"])
        self.assertEqual(violations("import time\ntime.time()"), ["time"])
        self.assertEqual(violations("from socket import socket"), ["socket"])
        self.assertEqual(violations("open('x')"), ["open()"])
        self.assertEqual(violations("from . import keys"), [])


class PureP2PImportTests(SynchronousTestCase):
    def test_sync_planners_are_pure(self):
        """The header tree and the download planner import no Twisted, socket or clock either (STYLE 1)."""
        p2p = CORE.parent / "p2p"
        for name in ("headers.py", "download.py", "peers.py"):
            self.assertEqual(violations((p2p / name).read_text()), [], f"p2p/{name} is not pure")
