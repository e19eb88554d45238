"""Giving freed heap memory back to the system (glibc's malloc_trim), so an idle node's RSS is what it holds.

Starting a node imports a few hundred modules, and the temporaries of that
work (compiled bytecode, class bodies, the store's first reads) leave about
1.5 MB of free but unreturned pages in glibc's heap.  Trimming once the node
has started, and again now and then, returns them; elsewhere it does nothing.
"""

import ctypes

HEAP_TRIM_S = 300  # a trim costs about a millisecond; this keeps it off every other timer's beat

_libc = None


def _default_libc():
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None)  # the running process's own symbols: libc's, on Linux
        except OSError:
            _libc = False
    return _libc


def trim_heap(libc=None) -> bool:
    """Return the free pages of the C heap to the system: True where malloc_trim exists (glibc), else False."""
    libc = _default_libc() if libc is None else libc
    trim = getattr(libc, "malloc_trim", None) if libc else None
    if trim is None:
        return False
    trim(0)
    return True
