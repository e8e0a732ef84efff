"""Open a user-given https:// address without letting it reach inside the cluster.

A dataset URL is chosen by whoever creates the FineTuneJob, and the trainer pod sits inside the cluster network:
a redirect to `http://` (sent in clear), or an address that resolves to the cloud metadata service
(169.254.169.254), a node, a Service or localhost would turn the trainer into a proxy into the cluster (SSRF).
So every hop must be https://, and the connection goes only to the addresses the host name resolved to and that
were checked: the check and the connect use the same resolution (no second DNS answer in between), and TLS still
verifies the certificate against the host name. Proxies from the environment are not used: a proxy would make the
connection on the trainer's behalf to an address this check never saw.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import urllib.request
from collections.abc import Callable
from typing import IO, Any
from urllib.parse import urlsplit

from .errors import InvalidInputError

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressPolicy = Callable[[IpAddress], str | None]
"""Returns why an address may not be connected to (e.g. 'loopback'), or None when it may."""


class UnsafeUrlError(InvalidInputError):
    """The address is not https://, or it resolves to an address inside a private network: never retried."""


def public_only(address: IpAddress) -> str | None:
    """Refuse everything but globally routable unicast addresses (IPv4-mapped IPv6 is checked as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return public_only(address.ipv4_mapped)
    for kind in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    if not address.is_global:
        return "not globally routable"
    return None


def checked_addresses(host: str, port: int, policy: AddressPolicy) -> list[tuple[Any, ...]]:
    """getaddrinfo() results for host:port, after checking that every address is allowed by `policy`."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        why = policy(address)
        if why is not None:
            raise UnsafeUrlError(
                f"{host} resolves to {address} ({why}): dataset and model addresses must be public; "
                "put the file on a volume (dataset.pvc) or in a ConfigMap to use data from inside the cluster"
            )
    return infos


def _pinned_connect(policy: AddressPolicy) -> Callable[..., socket.socket]:
    """A replacement for socket.create_connection that connects only to checked addresses."""

    def connect(address: tuple[str, int], timeout: Any = None, source_address: Any = None) -> socket.socket:
        host, port = address
        error: OSError | None = None
        for family, kind, proto, _, sockaddr in checked_addresses(host, port, policy):
            sock = socket.socket(family, kind, proto)
            try:
                if timeout is not None and timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
                    sock.settimeout(timeout)
                sock.connect(sockaddr)
                return sock
            except OSError as failed:
                sock.close()
                error = failed
        raise error or OSError(f"no address for {host}")

    return connect


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if urlsplit(newurl).scheme != "https":
            raise UnsafeUrlError(
                f"{req.full_url} redirects to {newurl}: only https:// addresses are allowed, at every redirect"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _CheckedHttps(urllib.request.HTTPSHandler):
    def __init__(self, policy: AddressPolicy, context: ssl.SSLContext | None) -> None:
        super().__init__(context=context)
        self._policy = policy

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        policy = self._policy

        def connection(host: str, **kwargs: Any) -> http.client.HTTPSConnection:
            conn = http.client.HTTPSConnection(host, **kwargs)
            conn._create_connection = _pinned_connect(policy)  # type: ignore[attr-defined]
            return conn

        return self.do_open(connection, req, context=self._context)  # type: ignore[attr-defined]


def open_public_https(
    url: str, timeout: float, policy: AddressPolicy = public_only, context: ssl.SSLContext | None = None
) -> IO[bytes]:
    """urlopen() for an https:// address whose every hop is https:// and resolves to addresses `policy` allows."""
    if urlsplit(url).scheme != "https":
        raise UnsafeUrlError(f"{url}: only https:// addresses are allowed")
    opener = urllib.request.OpenerDirector()
    for handler in (
        _CheckedHttps(policy, context or ssl.create_default_context()),
        _HttpsOnlyRedirects(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener.open(url, timeout=timeout)
