"""The client's address: what every per-address limit, the refused-token audit and the access log
name.

Without a reverse proxy it is the TCP peer. Behind one, every request comes from the proxy, so
per-address limits would be shared by everybody (one sender of bad tokens would lock everyone
out). ``ENDOLINK_TRUSTED_PROXIES`` lists the proxies' addresses (or networks): a request whose
peer is one of them is from the right-most ``X-Forwarded-For`` entry that is not itself a trusted
proxy — the last address a proxy of ours saw. Entries left of it are whatever the client wrote and
are never believed; from any other peer the header is ignored, so a client cannot choose its own
address. An entry that is no address keeps the last trusted hop (a shared limit, never a chosen
one).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import hdrs, web
from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

TRUSTED_PROXIES: web.AppKey[tuple[Network, ...]] = web.AppKey("trusted_proxies")
_CLIENT = web.RequestKey("client_address", str)


def trusted_networks(proxies: Iterable[str]) -> tuple[Network, ...]:
    """``ENDOLINK_TRUSTED_PROXIES``' entries (``10.0.0.2``, ``10.0.0.0/24``, ``::1``) parsed."""
    return tuple(ipaddress.ip_network(proxy.strip(), strict=False) for proxy in proxies)


def client_of(peer: str | None, forwarded_for: Iterable[str], trusted: tuple[Network, ...]) -> str:
    """The client of a request from ``peer`` carrying ``X-Forwarded-For`` headers (see above)."""
    address = peer or "unknown"
    if not _is_trusted(address, trusted):
        return address
    entries = [entry.strip() for header in forwarded_for for entry in header.split(",")]
    for entry in reversed(entries):
        if _address(entry) is None:
            return address
        address = entry
        if not _is_trusted(entry, trusted):
            return entry
    return address


def client_address(request: web.Request) -> str:
    """The request's client, worked out once per request."""
    known = request.get(_CLIENT)
    if known is None:
        trusted = request.app.get(TRUSTED_PROXIES, ())
        forwarded = request.headers.getall(hdrs.X_FORWARDED_FOR, [])
        known = request[_CLIENT] = client_of(request.remote, forwarded, trusted)
    return known


def limit_key(request: web.Request) -> str:
    """The client as per-address limits and the refused-token audit count it: an IPv6 client by
    its /64 (one host gets a whole /64 and picks addresses from it at will)."""
    client = client_address(request)
    address = _address(client)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return client


class ClientAccessLogger(AccessLogger):
    """aiohttp's access log, naming the client (``client_address``) rather than the proxy."""

    def _format_line(
        self, request: BaseRequest, response: StreamResponse, time: float
    ) -> Iterable[tuple[str | tuple[str, str], str]]:
        line = super()._format_line(request, response, time)
        client = request.get(_CLIENT) if request is not None else None
        if client is None:
            return line
        return [(key, client if key == "remote_address" else value) for key, value in line]


def _address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_trusted(text: str, trusted: tuple[Network, ...]) -> bool:
    address = _address(text)
    return address is not None and any(address in network for network in trusted)
