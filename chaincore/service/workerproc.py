"""What runs in a worker process besides the core's functions: the standard library only.

A worker unpickles its initializer by importing this module, so importing
Twisted here (or anything in service/ that does) would load it in every worker.
"""

import os
import struct
import sys
import threading
import time


def exit_with_parent(node_pid: int, interval_s: float = 0.5) -> None:
    """Worker initializer: end this worker soon after the node that started it is gone.

    A pool's workers block on a pipe that other workers also hold, so they
    would outlive a node killed with SIGKILL (keeping its stdout open, too).
    A worker's parent is the node (spawn) or the forkserver, which ends with
    the node; the worker ends when its parent changes or the node is gone.
    """
    parent_pid = os.getppid()

    def watch():
        while os.getppid() == parent_pid and _alive(node_pid):
            time.sleep(interval_s)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serve_signatures(stdin=None, stdout=None) -> None:
    """A signature worker's loop: read length-prefixed request buffers from stdin (rules.encode_groups or
    rules.encode_txs) and answer each on stdout with a length-prefixed rules.verify_encoded answer, in order,
    until stdin closes (the node ended or let it go).

    The node talks to this process through pipes its reactor watches, so
    sending a batch and taking its answer costs the node no thread and no
    pickling: one buffer each way.
    """
    from chaincore.core import rules  # the core only: keys and the backend CHAINCORE_CRYPTO names

    stdin = stdin if stdin is not None else sys.stdin.buffer
    stdout = stdout if stdout is not None else sys.stdout.buffer
    length = struct.Struct(">I")
    while True:
        head = stdin.read(4)
        if len(head) < 4:
            return
        (n,) = length.unpack(head)
        buf = stdin.read(n)
        if len(buf) < n:
            return
        answer = rules.verify_encoded(buf)
        stdout.write(length.pack(len(answer)) + answer)
        stdout.flush()


if __name__ == "__main__":
    serve_signatures()
