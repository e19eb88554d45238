"""The peer table's file in the datadir: written atomically, read leniently.

A small synchronous file, written at most every few seconds, so it stays in
the reactor thread.  A crash mid-write leaves the old file, never half a file.
"""

import json
import os

from ..logs import logger

from ..core.errors import Malformed
from .peers import PeerTable

log = logger("chaincore.p2p.peerfile")


def save_atomically(path: str, data: dict) -> None:
    """Write data as JSON to path through a temporary file, fsync and rename."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: str):
    """The JSON object in path, or None when the file is missing or unreadable (logged, not raised)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warn("ignoring unreadable peer file {path}: {error}", path=path, error=e)
        return None


def load_table(path: str, now: float, own_node_id: str = None, own_urls=(), **kwargs) -> PeerTable:
    """The PeerTable saved in path, or an empty one when there is none or it is not a peer table."""
    data = load(path)
    if data is not None:
        try:
            return PeerTable.from_json(data, now, own_node_id, own_urls, **kwargs)
        except Malformed as e:
            log.warn("ignoring peer file {path}: {error}", path=path, error=e)
    return PeerTable(own_node_id, own_urls, **kwargs)


def save_table(path: str, table: PeerTable) -> None:
    """Write table to path atomically."""
    save_atomically(path, table.to_json())
