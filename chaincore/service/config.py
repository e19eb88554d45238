"""Checking and completing the node's command-line options (CONTRACT 1)."""

import os
import re
from dataclasses import dataclass, field

from twisted.internet.endpoints import quoteStringArgument
from twisted.python import usage

from ..api import budgets, guard

from ..core.errors import BadAddress, BadPeerURL
from ..core.keys import address_payload
from ..core.params import NETWORKS
from ..core.peer_url import normalise_url


@dataclass(frozen=True)
class NodeLimits:
    """The budgets of the node's HTTP clients (README "Limits"): connections, deadlines, request tokens."""

    max_connections: int = budgets.DEFAULT_MAX_CONNECTIONS
    per_address: dict = field(default_factory=lambda: dict(budgets.DEFAULT_PER_ADDRESS))
    header_timeout_s: float = guard.DEFAULT_HEADER_TIMEOUT_S
    body_grace_s: float = guard.DEFAULT_BODY_GRACE_S
    body_min_bytes_per_s: float = guard.DEFAULT_BODY_MIN_BYTES_PER_S
    rates: dict = field(default_factory=lambda: dict(budgets.DEFAULT_RATES))


def parse_rate(text: str) -> budgets.Rate:
    """A request budget from `BURST/PER_SECOND` (e.g. 120/20); ValueError otherwise."""
    burst, slash, per_s = text.partition("/")
    try:
        rate = budgets.Rate(float(burst), float(per_s))
    except ValueError:
        raise ValueError(f"{text!r} is not BURST/PER_SECOND") from None
    if not slash or not (1 <= rate.burst <= 1e9 and 0 < rate.per_s <= 1e9):
        raise ValueError(f"{text!r} is not BURST/PER_SECOND (burst at least 1, a positive rate)")
    return rate


def _positive(options, name: str, kind=float):
    try:
        value = kind(options[name])
    except (TypeError, ValueError):
        raise usage.UsageError(f"--{name} must be a positive number") from None
    if not 0 < value <= 1e9:
        raise usage.UsageError(f"--{name} must be a positive number")
    return value


def parse_limits(options) -> NodeLimits:
    """The NodeLimits the options give (defaults for the options not given); UsageError naming a bad one."""
    get = getattr(options, "get", None) or options.__getitem__
    if get("max-connections") is None:  # options built without the limit options (tools, older tests)
        return NodeLimits()
    rates = {}
    for cls in budgets.CLASSES:
        try:
            rates[cls] = parse_rate(options[f"{cls}-budget"])
        except ValueError as e:
            raise usage.UsageError(f"--{cls}-budget: {e}") from None
    per_address = dict(budgets.DEFAULT_PER_ADDRESS, stranger=_positive(options, "connections-per-address", int))
    return NodeLimits(max_connections=_positive(options, "max-connections", int), per_address=per_address,
                      header_timeout_s=_positive(options, "header-timeout"),
                      body_min_bytes_per_s=_positive(options, "body-min-rate"), rates=rates)


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
    options["limits"] = parse_limits(options)
    if options["datadir"] is None:
        options["datadir"] = default_datadir(options["network"], _port_label(options["endpoint"]))
    # in full, from the folder twistd starts in: the startup line names it so, and the node keeps finding it
    # after twistd changes folder (--rundir); `--datadir=~/chain` reaches no shell that would expand the ~
    options["datadir"] = os.path.abspath(os.path.expanduser(options["datadir"]))
