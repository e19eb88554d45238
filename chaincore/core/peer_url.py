"""The one check of a peer's base URL, shared by the API, the options, the peer table and the CLIs.

A peer URL is `http://host[:port]` or `https://host[:port]`: no path, query,
fragment or user info, a port in 1-65535.  Pure, so every layer may use it.
"""

import ipaddress

from .errors import BadPeerURL

MAX_URL_CHARS = 200


def normalise_url(url) -> str:
    """The canonical form of a peer base URL (scheme and host lower case, no trailing slash); BadPeerURL otherwise."""
    if not isinstance(url, str) or not 0 < len(url) <= MAX_URL_CHARS:
        raise BadPeerURL(f"a peer URL must be a string of 1-{MAX_URL_CHARS} characters")
    scheme, sep, rest = url.strip().partition("://")
    scheme = scheme.lower()
    netloc = rest[:-1] if rest.endswith("/") else rest
    if not sep or scheme not in ("http", "https") or not netloc:
        raise BadPeerURL(f"{url!r} is not an http(s) base URL like http://localhost:5001")
    if any(c in netloc for c in "/?#@ \t\r\n\\"):
        raise BadPeerURL(f"{url!r} is not a bare base URL (no path, query or user info)")
    host, colon, port = netloc.rpartition(":") if not netloc.endswith("]") else (netloc, "", "")
    if colon and not (port.isdigit() and 0 < int(port) <= 65535 and host):
        raise BadPeerURL(f"{url!r} has a bad port (1-65535)")
    if not colon and not host:
        host = netloc
    if host.startswith("[") != host.endswith("]") or host in ("", "[]"):
        raise BadPeerURL(f"{url!r} has no host")
    return f"{scheme}://{netloc.lower()}"


def is_loopback_url(url) -> bool:
    """Whether url names the machine it is read on (localhost or a loopback address): useless to any
    other host, so it is never advertised to, nor passed on to, a peer that is not on loopback."""
    netloc = str(url).partition("://")[2].split("/")[0].lower()
    host = netloc[1:netloc.find("]")] if netloc.startswith("[") else netloc.rpartition(":")[0] or netloc
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def subnet_of(url) -> str:
    """A key grouping hosts that likely share a network (an IPv4 /24, an IPv6 /48, else the host name),
    so outbound peers can be chosen from different places first."""
    netloc = str(url).partition("://")[2].split("/")[0].lower()
    host = netloc[1:netloc.find("]")] if netloc.startswith("[") else netloc.rpartition(":")[0] or netloc
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
