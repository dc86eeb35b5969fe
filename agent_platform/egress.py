"""Which addresses the platform may send an HTTP request to: the ``callback_url`` (C20).

A ``callback_url`` comes from whoever may start a workflow; left alone it would let them
make a worker POST to anything the worker can reach: the loopback interface, the
private network, the cloud metadata service (169.254.169.254), Redis itself. So by
default only global addresses are contacted; an address that is loopback, private,
link-local, unspecified, multicast, reserved or shared (CGNAT) is refused unless one of
the networks of ``AGENT_PLATFORM_CALLBACK_ALLOW`` (CIDR, comma-separated, e.g.
``127.0.0.0/8,10.0.0.0/8``) contains it.

- At start (:func:`check_at_start`): a host that is an address in any spelling the
  system resolver accepts (``127.1``, ``2130706433``, ``0x7f.1``, ``[::ffff:127.0.0.1]``)
  and the ``localhost`` names (RFC 6761, with or without the final dot) are checked at
  once: refused with :class:`~agent_platform.errors.CallbackNotAllowed` (422). Other
  names are not looked up then: what a name resolves to at start proves nothing at send
  time.
- At send time (:func:`resolve`): the name is resolved once, every address it has must
  be allowed, and the request then goes to that checked address (see
  ``tasks/callbacks.py``), so a name cannot resolve to a public address for the check and
  to an internal one for the connection.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from .errors import CallbackNotAllowed, ConfigurationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: NAT64 (RFC 6052): an IPv6 address that carries an IPv4 one in its last 32 bits.
NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class Target:
    """Where a checked request goes.

    Attributes:
        host: the URL's host as written (for the ``Host`` header and TLS server name).
        address: the checked IP address to connect to.
        port: the TCP port.
    """

    host: str
    address: str
    port: int


@lru_cache(maxsize=32)
def allowed_networks(spec: str) -> tuple[IPNetwork, ...]:
    """The networks of an ``AGENT_PLATFORM_CALLBACK_ALLOW`` value (``""``: none).

    Raises:
        ConfigurationError: an entry is not a network in CIDR notation.
    """
    networks = []
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ConfigurationError(f"AGENT_PLATFORM_CALLBACK_ALLOW: {entry!r} is not a network (CIDR)") from exc
    return tuple(networks)


def refusal(address: IPAddress, allow: tuple[IPNetwork, ...]) -> str | None:
    """Why ``address`` may not be contacted (e.g. ``"127.0.0.1 (loopback address)"``), or
    None when it may.

    An IPv4 address carried in IPv6 (``::ffff:a.b.c.d``, NAT64) is judged as that IPv4
    address. Global addresses pass; others pass only inside an allowed network.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address in NAT64:
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if any(address in network for network in allow if network.version == address.version):
        return None
    for kind in ("loopback", "link_local", "unspecified", "multicast", "private", "reserved"):
        if getattr(address, f"is_{kind}"):
            return f"{address} ({kind.replace('_', '-')} address)"
    if not address.is_global:
        return f"{address} (not a global address)"
    return None


def check_at_start(url: str, allow_spec: str) -> None:
    """Refuse a ``callback_url`` whose target is already known to be internal.

    Raises:
        CallbackNotAllowed: the host is an address (any spelling) or a ``localhost``
            name that no allowed network contains; or the URL has no host.
    """
    host = _host(url)
    allow = allowed_networks(allow_spec)
    if _is_localhost_name(host):
        reason = None if _allows_loopback(allow) else f"{host} (a loopback name)"
    else:
        address = _numeric(host)
        reason = None if address is None else refusal(address, allow)
    if reason:
        raise CallbackNotAllowed(f"callback_url may not point at {reason}; AGENT_PLATFORM_CALLBACK_ALLOW can permit it")


def resolve(url: str, allow_spec: str) -> Target:
    """Resolve the URL's host and check every address it has.

    Returns:
        The first address, checked, with the host and port to use.

    Raises:
        CallbackNotAllowed: a resolved address is not allowed, or the URL is not http(s)
            with a host.
        OSError: the name does not resolve (``socket.gaierror``).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise CallbackNotAllowed(f"callback_url must be http or https, not {parts.scheme!r}")
    host = _host(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    check_at_start(url, allow_spec)  # the localhost names, whatever the resolver says of them
    allow = allowed_networks(allow_spec)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos))
    for address in addresses:
        reason = refusal(address, allow)
        if reason:
            raise CallbackNotAllowed(f"callback host {host!r} resolves to {reason}; not contacted")
    if not addresses:
        raise CallbackNotAllowed(f"callback host {host!r} has no address")
    return Target(host, str(addresses[0]), port)


def _host(url: str) -> str:
    host = urlsplit(url).hostname
    if not host:
        raise CallbackNotAllowed("callback_url has no host")
    return host


def _numeric(host: str) -> IPAddress | None:
    """The address a numeric host stands for, in every spelling the resolver accepts
    (``inet_aton``'s ``127.1`` and ``2130706433`` included), without any DNS lookup."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except OSError:
        return None
    return ipaddress.ip_address(str(infos[0][4][0]).split("%", 1)[0])


def _is_localhost_name(host: str) -> bool:
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


def _allows_loopback(allow: tuple[IPNetwork, ...]) -> bool:
    return any(ipaddress.ip_address("127.0.0.1") in n or ipaddress.ip_address("::1") in n for n in allow)
