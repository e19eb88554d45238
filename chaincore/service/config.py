"""Checking and completing the node's command-line options (CONTRACT 1)."""

import os
import re

from twisted.internet.endpoints import quoteStringArgument
from twisted.python import usage

from ..core.errors import BadAddress, BadPeerURL
from ..core.keys import address_payload
from ..core.params import NETWORKS
from ..core.peer_url import normalise_url


def default_datadir(network: str, port_label: str) -> str:
    """A per-port folder under the user's data directory, so two local nodes never share one."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "chaincore", network, f"node-{port_label}")


def _port_label(endpoint: str) -> str:
    m = re.search(r"(?:^|:)(\d+)(?::|$)", endpoint)
    return m.group(1) if m else re.sub(r"[^A-Za-z0-9]+", "_", endpoint)[:40]


def parse_ports(text: str) -> list:
    """Ports from `5000-5011`, `5000,5002` or a mix; an empty string gives none."""
    ports = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, dash, hi = part.partition("-")
        try:
            lo_n, hi_n = int(lo), int(hi if dash else lo)  # "5000-" is a typo, not port 5000
        except ValueError:
            raise ValueError(f"bad port range {part!r}") from None
        if not (0 < lo_n <= hi_n <= 65535) or hi_n - lo_n > 1024:
            raise ValueError(f"bad port range {part!r}")
        ports.extend(range(lo_n, hi_n + 1))
    return ports


def finish_options(options) -> None:
    """Validate options and derive `endpoint`, `port_number`, `datadir`, `advertise`, `discover_ports`."""
    if options["network"] not in NETWORKS:
        raise usage.UsageError(f"--network must be one of {', '.join(sorted(NETWORKS))}")
    port = options["port"].strip()
    if port.isdigit():
        n = int(port)
        if not 0 <= n <= 65535:
            raise usage.UsageError("--port must be 0-65535 or an endpoint description")
        options["endpoint"] = f"tcp:{n}:interface={quoteStringArgument(options['interface'])}"
        options["port_number"] = n
    elif ":" in port:
        options["endpoint"] = port
        options["port_number"] = None
    else:
        raise usage.UsageError("--port must be a port number or an endpoint description like tcp:5000")
    try:
        options["discover_ports"] = parse_ports(options["discover-ports"])
    except ValueError as e:
        raise usage.UsageError(f"--discover-ports: {e}")
    if not 1 <= options["outbound"] <= 64:
        raise usage.UsageError(f"--outbound must be 1-64, not {options['outbound']}")
    if options["mine"] is not None:
        try:
            address_payload(options["mine"])
        except BadAddress as e:
            raise usage.UsageError(f"--mine: {e}")
    try:
        options["peers"] = [normalise_url(url) for url in options["peers"]]
    except BadPeerURL as e:
        raise usage.UsageError(f"--peer: {e}")
    if options["advertise"] is not None:
        try:
            options["advertise"] = normalise_url(options["advertise"])
        except BadPeerURL as e:
            raise usage.UsageError(f"--advertise: {e}")
    if options["datadir"] is None:
        options["datadir"] = default_datadir(options["network"], _port_label(options["endpoint"]))
