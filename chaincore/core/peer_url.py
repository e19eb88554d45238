"""The one check of a peer's base URL, shared by the API, the options, the peer table and the CLIs.

A peer URL is `http://host[:port]` or `https://host[:port]`: no path, query,
fragment or user info, a port in 1-65535, and a host an HTTP client can
connect to: an IPv6 address in brackets, or a name (an IPv4 address is one)
whose labels are letters, digits and inner hyphens once IDNA-encoded.  Pure,
so every layer may use it.
"""

import ipaddress
import re

from .errors import BadPeerURL

MAX_URL_CHARS = 200
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # RFC 1123, as the HTTP client's IDNA encoding checks


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
    if not _is_host(host.lower()):
        raise BadPeerURL(f"{url!r} has a host no client can connect to")
    return f"{scheme}://{netloc.lower()}"


def _is_host(host: str) -> bool:
    """Whether host is an IPv6 address in brackets, or a name whose IDNA labels are RFC 1123 labels."""
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:  # a lone surrogate, an empty label, a label over 63 characters
        return False
    labels = ascii_host[:-1].split(".") if ascii_host.endswith(".") else ascii_host.split(".")
    return len(ascii_host) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


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
