"""Dataset URLs cannot reach inside the cluster: https at every redirect, public addresses after DNS resolution.

A real https server on 127.0.0.1 (certificate from openssl, trusted through SSL_CERT_FILE) serves a file and
redirects; the loopback server itself is reachable only where a test widens the address policy to loopback."""

from __future__ import annotations

import ipaddress
import ssl
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from kubetune_trainer.data_sources import download
from kubetune_trainer.errors import InvalidInputError
from kubetune_trainer.safe_fetch import UnsafeUrlError, public_only

from tests.support.envtest.pki import Pki
from tests.trainer.helpers import allow_loopback

ROWS = b'{"text": "hello"}\n'


class _Site(BaseHTTPRequestHandler):
    """/data.jsonl is the file; /hop/data.jsonl?to=URL answers 302 to URL. Every request is counted."""

    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        if self.path.startswith("/hop/"):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.end_headers()
            return
        if self.path == "/data.jsonl":
            self.send_response(200)
            self.send_header("Content-Length", str(len(ROWS)))
            self.end_headers()
            self.wfile.write(ROWS)
            return
        self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def site(tmp_path: Path, monkeypatch):
    pki = Pki.create(tmp_path / "pki", {})  # serving certificate for 127.0.0.1 and localhost
    hits: list[str] = []
    server = HTTPServer(("127.0.0.1", 0), type("Site", (_Site,), {"hits": hits}))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert("serving"), pki.key("serving"))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    yield server.server_address[1], hits
    server.shutdown()


def test_a_public_policy_refuses_a_loopback_server_before_any_request(site, tmp_path: Path):
    port, hits = site
    for host, shown in (("127.0.0.1", "127.0.0.1"), ("localhost", "127.0.0.1")):  # a literal, and after DNS
        with pytest.raises(UnsafeUrlError, match=rf"{host} resolves to {shown} \(loopback\)") as caught:
            download(f"https://{host}:{port}/data.jsonl", tmp_path)
        assert isinstance(caught.value, InvalidInputError)  # exit 64: the Job fails at once, no retry
        assert "dataset.url" in str(caught.value)
    assert hits == []


def test_the_file_is_fetched_through_an_https_redirect(site, tmp_path: Path):
    port, hits = site
    target = f"https://localhost:{port}/data.jsonl"
    path = download(f"https://127.0.0.1:{port}/hop/data.jsonl?to={target}", tmp_path, allow_loopback)
    assert path.read_bytes() == ROWS
    assert hits == [f"/hop/data.jsonl?to={target}", "/data.jsonl"]


def test_a_redirect_to_http_is_refused(site, tmp_path: Path):
    port, hits = site
    url = f"https://127.0.0.1:{port}/hop/data.jsonl?to=http://127.0.0.1:{port}/data.jsonl"
    with pytest.raises(UnsafeUrlError, match="only https:// addresses are allowed, at every redirect"):
        download(url, tmp_path, allow_loopback)
    assert hits == [f"/hop/data.jsonl?to=http://127.0.0.1:{port}/data.jsonl"]


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("https://169.254.169.254/latest/data.jsonl", "link-local"),  # the cloud metadata service
        ("https://10.0.0.1/data.jsonl", "private"),  # a Service or a node
        ("https://[::1]/data.jsonl", "loopback"),
    ],
)
def test_a_redirect_into_the_cluster_is_refused_after_resolution(site, tmp_path: Path, target: str, why: str):
    port, _ = site
    widened = lambda address: None if str(address) == "127.0.0.1" else public_only(address)  # noqa: E731
    with pytest.raises(UnsafeUrlError, match=rf"\({why}\)"):
        download(f"https://127.0.0.1:{port}/hop/data.jsonl?to={target}", tmp_path, widened)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "not globally routable"),  # carrier-grade NAT, used by some pod networks
        ("169.254.169.254", "link-local"),
        ("127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped IPv6 is judged as the IPv4 address
        ("fd00::1", "private"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
    ],
)
def test_public_only(address: str, why: str | None):
    assert public_only(ipaddress.ip_address(address)) == why
