"""Certificates for a test control plane, made with the openssl command (present on every Debian machine).

One CA signs the API server's serving certificate and the client certificates; the service-account key pair
signs ServiceAccount tokens. Keys are EC P-256: generated in milliseconds, accepted by every component.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {done.stderr.strip()}")


def _key(path: Path) -> None:
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", path.name, cwd=path.parent)


@dataclass(frozen=True)
class Pki:
    """The files of one control plane's PKI, all in `folder`."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"

    def cert(self, name: str) -> Path:
        return self.folder / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.folder / f"{name}.key"

    @property
    def service_account_key(self) -> Path:
        return self.folder / "sa.key"

    @property
    def service_account_public_key(self) -> Path:
        return self.folder / "sa.pub"

    @classmethod
    def create(cls, folder: Path, clients: dict[str, str]) -> Pki:
        """A CA, a serving cert for 127.0.0.1/localhost, one client cert per `name -> subject`, the SA keys."""
        folder.mkdir(parents=True, exist_ok=True)
        pki = cls(folder)
        _key(pki.key("ca"))
        _openssl(
            "req", "-x509", "-new", "-key", "ca.key", "-out", "ca.crt", "-days", "7",
            "-subj", "/CN=kubetune-envtest-ca", cwd=folder,
        )  # fmt: skip
        pki._sign("serving", "/CN=kube-apiserver", "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        for name, subject in clients.items():
            pki._sign(name, subject, "extendedKeyUsage=clientAuth\n")
        _openssl("genrsa", "-out", "sa.key", "2048", cwd=folder)
        _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=folder)
        return pki

    def _sign(self, name: str, subject: str, extensions: str) -> None:
        _key(self.key(name))
        (self.folder / f"{name}.ext").write_text(extensions)
        _openssl("req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=self.folder)
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "7", "-extfile", f"{name}.ext", cwd=self.folder,
        )  # fmt: skip
