"""A network testbed on one machine: hosts in network namespaces behind a user-space switch.

`Testbed` (bed.py) makes the hosts and runs a node on each; the switch
(switch.py) applies delay, jitter, loss and partitions, and counts every
frame (`Traffic`, traffic.py).  It needs root, `ip` and /dev/net/tun;
`unavailable_reason()` says in one line what is missing.  This package is a
tool for tests, benchmarks and `scripts/testbed`; the node never imports it.
"""

from .bed import Host, Testbed, TestbedError, TestbedUnavailable, clean_leftovers, unavailable_reason
from .traffic import Traffic

__all__ = ["Host", "Testbed", "TestbedError", "TestbedUnavailable", "Traffic", "clean_leftovers",
           "unavailable_reason"]
