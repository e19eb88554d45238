"""The layering of docs/architecture.md holds: the core stays pure (no Twisted, no I/O, no clock; STYLE 1),
every import between ChainCore's packages follows an arrow of the doc's `layers` block, modules import
each other without cycles, and the functions the doc's block and transaction flows list exist."""

import ast
import importlib
import pathlib
import re

from twisted.trial.unittest import SynchronousTestCase

import chaincore
import chaincore.core

CORE = pathlib.Path(chaincore.core.__file__).parent
PACKAGE = pathlib.Path(chaincore.__file__).parent
ROOT = PACKAGE.parent
ARCHITECTURE = ROOT / "docs" / "architecture.md"
PLUGIN = ROOT / "twisted" / "plugins" / "chaincore_plugin.py"
ON_DISK = ({p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
           | {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"})  # chaincore's packages and modules
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


# -- layers -------------------------------------------------------------------------------

def doc_block(name: str, text: str = None) -> str:
    """The body of the fenced block of docs/architecture.md tagged name."""
    text = ARCHITECTURE.read_text() if text is None else text
    m = re.search(r"^```" + re.escape(name) + r"\n(.*?)^```", text, re.S | re.M)
    if m is None:
        raise AssertionError(f"docs/architecture.md has no ```{name} block")
    return m.group(1)


def parse_arrows(block: str) -> dict:
    """{layer: set of layers it may import} from lines `layer -> a, b`."""
    arrows = {}
    for line in filter(None, (l.strip() for l in block.splitlines())):
        layer, sep, targets = line.partition("->")
        if not sep:
            raise AssertionError(f"not an arrow line: {line!r}")
        arrows[layer.strip()] = {t.strip() for t in targets.split(",") if t.strip()}
    return arrows


def module_name(path: pathlib.Path) -> str:
    """chaincore/p2p/sync.py -> chaincore.p2p.sync; chaincore/p2p/__init__.py -> chaincore.p2p."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str | None:
    """The layer of a chaincore module (core, p2p, ..., logs, root), or None outside chaincore."""
    parts = module.split(".")
    if parts[0] != "chaincore":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in ON_DISK else "root"  # from .. import __version__: root


def imports_of(module: str, source: str, is_package: bool = False) -> list:
    """(imported module, line, inside a function) for every import in source, relative ones resolved."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, inner) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    anchor = base[:len(base) - (child.level - 1)]
                    target = ".".join(anchor + ([child.module] if child.module else []))
                else:
                    target = child.module
                if child.module is None:  # from . import keys: each name may be a module
                    found.extend((f"{target}.{a.name}", child.lineno, inner) for a in child.names)
                else:
                    found.append((target, child.lineno, inner))
            visit(child, inner)

    visit(ast.parse(source), False)
    return found


def layer_violations(modules: dict, arrows: dict) -> list:
    """Imports between layers that no arrow allows, for {module name: (source, is_package)}."""
    bad = []
    for module, (source, is_package) in modules.items():
        here = layer_of(module)
        for target, line, _ in imports_of(module, source, is_package):
            there = layer_of(target)
            if there is None or there == here:
                continue
            if there not in arrows.get(here, set()):
                bad.append(f"{module}:{line} imports {target} ({here} -> {there} is not an arrow)")
    return bad


def uncommented_function_imports(module: str, source: str, is_package: bool = False) -> list:
    """Imports inside functions with no comment on their line or the line above."""
    lines = source.splitlines()
    bad = []
    for target, line, inner in imports_of(module, source, is_package):
        if inner and "#" not in lines[line - 1] and "#" not in lines[line - 2]:
            bad.append(f"{module}:{line} imports {target} inside a function without saying why")
    return bad


def cycles(modules: dict) -> list:
    """Import cycles among modules ({name: (source, is_package)}), each as a list of module names."""
    known = set(modules)
    graph = {}
    for module, (source, is_package) in modules.items():
        targets = set()
        for target, _, _ in imports_of(module, source, is_package):
            while target and target not in known:  # from .block import Header: the module is .block
                target = target.rpartition(".")[0]
            if target and target != module and not module.startswith(target + "."):
                targets.add(target)
        graph[module] = targets
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def strongly_connect(v):  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongly_connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongly_connect(v)
    return found


def chaincore_modules() -> dict:
    return {module_name(p): (p.read_text(), p.name == "__init__.py") for p in sorted(PACKAGE.rglob("*.py"))}


class LayerTests(SynchronousTestCase):
    def setUp(self):
        self.arrows = parse_arrows(doc_block("layers"))
        self.modules = chaincore_modules()

    def test_doc_names_every_layer(self):
        """The doc's layers block names every package of chaincore, and only those."""
        layers = {layer_of(m) for m in self.modules}
        self.assertEqual(set(self.arrows), layers)
        for targets in self.arrows.values():
            self.assertLessEqual(targets, layers)

    def test_every_import_follows_an_arrow(self):
        """Every import between chaincore's layers, relative and in-function ones included, is an arrow."""
        self.assertGreater(len(self.modules), 30)
        self.assertEqual(layer_violations(self.modules, self.arrows), [])

    def test_no_import_cycles(self):
        """No two chaincore modules import each other, directly or through others."""
        self.assertEqual(cycles(self.modules), [])

    def test_function_imports_say_why(self):
        """An import inside a function carries a comment saying why it is not at the top."""
        bad = [v for m, (src, pkg) in self.modules.items() for v in uncommented_function_imports(m, src, pkg)]
        self.assertEqual(bad, [])

    def test_plugin_names_only_the_tap(self):
        """The twistd plugin names chaincore.service.tap and imports nothing of chaincore."""
        source = PLUGIN.read_text()
        self.assertIn('"chaincore.service.tap"', source)
        self.assertEqual([t for t, _, _ in imports_of("twisted.plugins.chaincore_plugin", source)
                          if t.startswith("chaincore")], [])

    def test_forbidden_arrow_fails(self):
        """A synthetic module importing against an arrow (top-level, relative or in a function) is caught."""
        synthetic = {
            "chaincore.p2p.synthetic": ("from ..service.timers import every\n", False),
            "chaincore.core.synthetic": ("def f():\n    from chaincore.storage import sqlite  # why\n", False),
            "chaincore.api.synthetic": ("from ..p2p import peers\n", False),
        }
        found = layer_violations(synthetic, self.arrows)
        self.assertEqual(len(found), 3, found)
        self.assertIn("chaincore.p2p.synthetic:1 imports chaincore.service.timers (p2p -> service", found[0])
        self.assertIn("core -> storage", found[1])
        self.assertIn("api -> p2p", found[2])
        allowed = {"chaincore.p2p.synthetic": ("from ..core import errors\nfrom ..logs import logger\n", False)}
        self.assertEqual(layer_violations(allowed, self.arrows), [])
        self.assertEqual(layer_violations(dict(self.modules, **synthetic), self.arrows), found)

    def test_cycle_and_uncommented_import_fail(self):
        """A synthetic pair of modules importing each other is a cycle; a bare in-function import is caught."""
        pair = {"chaincore.service.one": ("from . import two\n", False),
                "chaincore.service.two": ("def f():\n    from .one import x  # late on purpose\n", False)}
        self.assertEqual(cycles(pair), [["chaincore.service.one", "chaincore.service.two"]])
        self.assertEqual(len(uncommented_function_imports("chaincore.service.two", "def f():\n    import os\n")), 1)
        self.assertEqual(uncommented_function_imports("chaincore.service.two", pair["chaincore.service.two"][0]), [])

    def test_arrows_parse(self):
        """An arrow line lists the layers a layer may import; an empty right side allows none."""
        self.assertEqual(parse_arrows("core -> root\nlogs ->\n"), {"core": {"root"}, "logs": set()})


class FlowTests(SynchronousTestCase):
    def check_flow(self, name: str):
        names = [line.strip() for line in doc_block(name).splitlines() if line.strip()]
        self.assertGreater(len(names), 5)
        for dotted in names:
            parts = dotted.split(".")
            for cut in range(len(parts), 0, -1):
                try:
                    obj = importlib.import_module("chaincore." + ".".join(parts[:cut]))
                except ImportError:
                    continue
                for attr in parts[cut:]:
                    obj = getattr(obj, attr, None)
                    self.assertIsNotNone(obj, f"{dotted} in docs/architecture.md does not exist")
                self.assertTrue(callable(obj), dotted)
                break
            else:
                self.fail(f"{dotted} names no module")

    def test_block_flow_names_real_functions(self):
        """Every function of the doc's block flow exists in the code."""
        self.check_flow("flow-block")

    def test_transaction_flow_names_real_functions(self):
        """Every function of the doc's transaction flow exists in the code."""
        self.check_flow("flow-tx")


class PureP2PImportTests(SynchronousTestCase):
    def test_sync_planners_are_pure(self):
        """The header tree and the download planner import no Twisted, socket or clock either (STYLE 1)."""
        p2p = CORE.parent / "p2p"
        for name in ("headers.py", "download.py", "peers.py"):
            self.assertEqual(violations((p2p / name).read_text()), [], f"p2p/{name} is not pure")
