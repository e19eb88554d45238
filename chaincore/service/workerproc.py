"""What runs in a worker process besides the core's functions: the standard library only.

A worker unpickles its initializer by importing this module, so importing
Twisted here (or anything in service/ that does) would load it in every worker.
"""

import os
import time
import threading


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
