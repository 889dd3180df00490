"""Throwaway TLS material made with the openssl CLI, and a private dockerd that demands it.

`make_pki` writes two unrelated CAs under a directory: the "good" one signs a server
certificate for 127.0.0.1 and a client certificate; the "other" one signs a client
certificate of its own, so tests can present a CA or a client the daemon does not trust.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from janitor.children import free_port
from sandbox.daemons import PrivateDaemon
from sandbox.image import ensure_test_image

DAYS = "2"


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path
    other_client_cert: Path
    other_client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("openssl not found on PATH: apt-get install openssl")
    done = subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{done.stderr}")


def _make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}-key.pem", directory / f"{name}.pem"
    _openssl("genrsa", "-out", key.name, "2048", cwd=directory)
    _openssl(
        "req", "-x509", "-new", "-key", key.name, "-sha256", "-days", DAYS,
        "-subj", f"/CN=janitor test {name}", "-out", cert.name,
        cwd=directory,
    )  # fmt: skip
    return cert, key


def _make_leaf(
    directory: Path, name: str, ca: tuple[Path, Path], extensions: str
) -> tuple[Path, Path]:
    key, csr, cert = (directory / f"{name}{suffix}" for suffix in ("-key.pem", ".csr", ".pem"))
    ext = directory / f"{name}.ext"
    ext.write_text(extensions)
    _openssl("genrsa", "-out", key.name, "2048", cwd=directory)
    _openssl(
        "req", "-new", "-key", key.name, "-subj", f"/CN={name}", "-out", csr.name, cwd=directory
    )
    ca_cert, ca_key = ca
    _openssl(
        "x509", "-req", "-in", csr.name, "-CA", ca_cert.name, "-CAkey", ca_key.name,
        "-CAcreateserial", "-days", DAYS, "-sha256", "-extfile", ext.name, "-out", cert.name,
        cwd=directory,
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    good = _make_ca(directory, "ca")
    other = _make_ca(directory, "other-ca")
    server_cert, server_key = _make_leaf(
        directory,
        "server",
        good,
        "subjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth\n",
    )
    client_ext = "extendedKeyUsage = clientAuth\n"
    client_cert, client_key = _make_leaf(directory, "client", good, client_ext)
    other_cert, other_key = _make_leaf(directory, "other-client", other, client_ext)
    return Pki(
        ca_cert=good[0],
        server_cert=server_cert,
        server_key=server_key,
        client_cert=client_cert,
        client_key=client_key,
        other_ca_cert=other[0],
        other_client_cert=other_cert,
        other_client_key=other_key,
    )


class TlsDaemon(PrivateDaemon):
    """A private dockerd that also listens on loopback tcp, TLS-verified both ways.

    Its unix socket (`url`) stays open for the tests' own setup; the janitor gets `tcp_url`.
    """

    def __init__(self, name: str, pki: Pki) -> None:
        self.port = free_port()
        self.tcp_url = f"tcp://127.0.0.1:{self.port}"
        super().__init__(
            name,
            extra_args=[
                "--tlsverify",
                f"--tlscacert={pki.ca_cert}",
                f"--tlscert={pki.server_cert}",
                f"--tlskey={pki.server_key}",
                f"--host={self.tcp_url}",
            ],
        )

    def start(self) -> None:
        super().start()
        ensure_test_image(self.api())
