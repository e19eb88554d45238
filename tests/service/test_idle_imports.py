"""An idle node loads only what serving needs: no signature backend, explorer pages, miner or process pool."""

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BUILD_A_NODE = """
import sys, tempfile
from twisted.internet.task import Clock
from chaincore.core.params import REGTEST
from chaincore.service.wiring import build_node, open_store
datadir = tempfile.mkdtemp()
store, lock = open_store(datadir, REGTEST)
service = build_node(store, REGTEST, Clock(), advertise_url="http://127.0.0.1:5999", datadir=datadir)
service.api.resource()
print(" ".join(sorted(sys.modules)))
"""

LAZY = {"coincurve", "Crypto", "multiprocessing", "concurrent.futures.process", "chaincore.api.explorer",
        "chaincore.service.miner", "chaincore.core.pow"}


class IdleImportTests(SynchronousTestCase):
    def test_built_node_loads_nothing_it_does_not_use(self):
        """A node built as twistd builds it has loaded no signature backend, explorer, miner or process pool."""
        out = subprocess.run([sys.executable, "-c", BUILD_A_NODE], capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT)
        self.assertEqual(out.returncode, 0, out.stderr[-2000:])
        loaded = set(out.stdout.split())
        self.assertIn("chaincore.api.routes", loaded)
        self.assertEqual(LAZY & loaded, set())

    def test_first_verify_loads_the_backend(self):
        """Importing keys chooses no backend; the first verify loads one, and says which."""
        code = ("from chaincore.core import keys; before = keys.loaded_backend_name(); "
                "keys.verify(keys._GENERATOR, bytes(32), keys._KNOWN_SIGNATURE); "
                "print(before, keys.loaded_backend_name() == keys.backend_name())")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT, check=True)
        self.assertEqual(out.stdout.split(), ["None", "True"])
