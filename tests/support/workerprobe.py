"""A function for a worker process to run in tests: which top-level packages it has imported (stdlib only)."""

import sys


def loaded_packages() -> list:
    """The sorted top-level names of every module imported in this process."""
    return sorted({name.split(".")[0] for name in sys.modules})
