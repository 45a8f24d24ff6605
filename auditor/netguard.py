"""Which addresses a public instance may call, and the guard that holds it to them: within
:func:`public_net_only`, sockets connect only to public internet addresses (:func:`is_public_ip`).

A public instance refuses a private API base before calling (``Policy.check_base`` asks
:func:`public_addresses`, and refuses with :data:`REFUSED_BASE`); this second check, made as each
socket connects, also covers redirects and DNS answers that change between the check and the
connection. The guard patches ``socket.socket.connect`` the first time it is switched on, so a
process that never serves strangers is never patched.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import socket

REFUSED_BASE = (
    "this public instance calls only public internet addresses: that API base is not one it may "
    "call (loopback, private, link-local and unresolvable addresses are refused before any "
    "connection; the owner can allow them with AUDITOR_ALLOW_PRIVATE_BASES=1)"
)


def is_public_ip(address: str) -> bool:
    """An address on the public internet (not loopback, private, link-local, shared, reserved,
    multicast or unspecified; an IPv4 address inside IPv6 is judged as IPv4)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is not None:
            ip = inner
    return ip.is_global and not ip.is_multicast


def public_addresses(host: str, port: int) -> bool:
    """Whether ``host`` resolves, and only to public internet addresses."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(is_public_ip(info[4][0]) for info in infos)


_PUBLIC_NET_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("auditor_public_net", default=False)


class BlockedAddress(ConnectionRefusedError):
    """A connection the public-network guard refused (never opened)."""


def _install() -> None:
    if getattr(socket.socket.connect, "_auditor_guard", False):
        return
    plain_connect, plain_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def refused(sock: socket.socket, address) -> bool:
        return (
            _PUBLIC_NET_ONLY.get()
            and sock.family in (socket.AF_INET, socket.AF_INET6)
            and not is_public_ip(str(address[0]))
        )

    def connect(self, address):
        if refused(self, address):
            raise BlockedAddress(REFUSED_BASE)
        return plain_connect(self, address)

    def connect_ex(self, address):
        if refused(self, address):
            raise BlockedAddress(REFUSED_BASE)
        return plain_connect_ex(self, address)

    connect._auditor_guard = True  # type: ignore[attr-defined]
    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex


@contextlib.contextmanager
def public_net_only(on: bool = True):
    """Within this block (and the tasks it starts), connect only to public internet addresses."""
    if on:
        _install()
    token = _PUBLIC_NET_ONLY.set(on or _PUBLIC_NET_ONLY.get())
    try:
        yield
    finally:
        _PUBLIC_NET_ONLY.reset(token)


def blocked(exc: BaseException | None) -> bool:
    """Whether the guard refused the connection (anywhere in the cause chain)."""
    seen = 0
    while exc is not None and seen < 12:
        if isinstance(exc, BlockedAddress) or REFUSED_BASE in str(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False
