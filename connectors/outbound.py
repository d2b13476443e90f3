"""Outbound HTTP goes to public addresses only: callbacks and connector base URLs alike.

A URL an integration or an operator typed could point at this machine, the private network
or the cloud's metadata service (169.254.169.254). So every host is resolved once, every
address it resolves to is checked, and the connection is made to a checked address; the
Host header and TLS SNI/certificate check still use the name. A second resolution (DNS
rebinding: public when checked, internal when connected) therefore never happens.

OUTBOUND_ALLOWLIST (comma-separated hostnames, addresses or CIDRs) admits what a deployment
means to reach, e.g. an in-house REST service on 10.1.2.3 or, in tests, 127.0.0.1.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import urllib.parse
import urllib.request
from collections.abc import Iterable
from functools import partial

from django.conf import settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_connect = socket.create_connection  # one seam, so tests can see where connections go


class OutboundRefused(ValueError):
    """The URL's host is, or resolves to, an address outbound calls may not reach."""


class Unresolvable(OutboundRefused):
    """The host does not resolve (now, from here)."""


def allowlist() -> tuple[frozenset[str], tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]]:
    """(hostnames, networks) from OUTBOUND_ALLOWLIST, read on every call so a changed setting applies."""
    names, networks = set(), []
    for entry in str(getattr(settings, "OUTBOUND_ALLOWLIST", "") or "").split(","):
        entry = entry.strip().strip("[]").lower()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(entry.rstrip("."))
    return frozenset(names), tuple(networks)


def address_problem(address: Address) -> str:
    """Why outbound calls may not reach this address, or '' if it is public (or allowlisted)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if any(address in network for network in allowlist()[1]):
        return ""
    for kind in ("loopback", "link_local", "multicast", "unspecified", "reserved", "site_local", "private"):
        if getattr(address, f"is_{kind}", False):
            return f"a {kind.replace('_', '-')} address"
    return "" if address.is_global else "not a public address"


def resolve(host: str, port: int) -> list[str]:
    """Every address the host resolves to (a literal address resolves to itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Unresolvable(f"{host} cannot be resolved ({exc})") from None
    return list(dict.fromkeys(info[4][0].split("%")[0] for info in infos))


def checked_addresses(host: str, port: int) -> list[str]:
    """Resolve once and check every address: all must be allowed, or the host is refused."""
    if not host:
        raise OutboundRefused("the URL has no host")
    addresses = resolve(host, port)
    if host.lower().rstrip(".") in allowlist()[0]:
        return addresses
    for text in addresses:
        problem = address_problem(ipaddress.ip_address(text))
        if problem:
            raise OutboundRefused(
                f"{host} resolves to {text}, {problem}; outbound calls reach public addresses only "
                "(OUTBOUND_ALLOWLIST admits others)"
            )
    if not addresses:
        raise OutboundRefused(f"{host} resolves to no address")
    return addresses


def check_url(url: str) -> list[str]:
    """The checked addresses of an http(s) URL's host; raises OutboundRefused."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise OutboundRefused("the URL's port is not a number from 0 to 65535") from None
    return checked_addresses(parts.hostname or "", port)


def _pinned_socket(addresses: Iterable[str], port: int, timeout, source_address) -> socket.socket:
    """Connect to the first checked address that answers; never resolve the name again."""
    last_error: OSError | None = None
    for address in addresses:
        try:
            return _connect((address, port), timeout, source_address)
        except OSError as exc:
            last_error = exc
    raise last_error or OSError("no address to connect to")


class PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host, *, addresses: list[str], **kwargs):
        super().__init__(host, **kwargs)
        self.addresses = addresses

    def connect(self):
        self.sock = _pinned_socket(self.addresses, self.port, self.timeout, self.source_address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host, *, addresses: list[str], **kwargs):
        super().__init__(host, **kwargs)
        self.addresses = addresses

    def connect(self):
        sock = _pinned_socket(self.addresses, self.port, self.timeout, self.source_address)
        # SNI and the certificate check use the name the URL gave, not the address connected to.
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _addresses_for(request: urllib.request.Request) -> list[str]:
    return check_url(request.full_url)


class PinnedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(partial(PinnedHTTPConnection, addresses=_addresses_for(req)), req)


class PinnedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(partial(PinnedHTTPSConnection, addresses=_addresses_for(req)), req,
                            context=self._context, check_hostname=self._check_hostname)


def build_opener(*handlers: urllib.request.BaseHandler) -> urllib.request.OpenerDirector:
    """urllib's opener with only checked, pinned http(s) connections and no proxy (a proxy would hide the host)."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), PinnedHTTPHandler, PinnedHTTPSHandler,
                                       *handlers)
