"""Per-run SSH keys: a client key for the testbed and a host key for the guest's sshd.

Both are ed25519 and made fresh for every machine. The guest's host key is generated here, on
the host, and its public half is pinned in the SSH client, so the testbed never accepts an
unknown host key.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from testbed.errors import DependencyError


@dataclass(frozen=True)
class KeyPair:
    private: Path  #: the private key file (OpenSSH format for the client, dropbear's for the host)
    public: str  #: ``ssh-ed25519 AAAA... comment``


def client_key(folder: Path) -> KeyPair:
    """A new client key in OpenSSH format (usable by both paramiko and ``ssh -i``)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    path = folder / "id_ed25519"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    return KeyPair(path, public.decode() + " testbed-client")


def guest_host_key(folder: Path) -> KeyPair:
    """A new host key for dropbear, in dropbear's own format, with its OpenSSH public line."""
    path = folder / "guest_host_key"
    try:
        subprocess.run(
            ["dropbearkey", "-t", "ed25519", "-f", str(path)],
            capture_output=True,
            check=True,
            timeout=30,
        )
        out = subprocess.run(
            ["dropbearkey", "-y", "-f", str(path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
    except FileNotFoundError as exc:
        raise DependencyError(
            "dropbearkey not found; install it with 'apt-get install dropbear-bin'"
        ) from exc
    except subprocess.CalledProcessError as exc:
        raise DependencyError(f"dropbearkey failed: {exc.stderr!r}") from exc
    line = next((ln for ln in out.splitlines() if ln.startswith("ssh-ed25519 ")), None)
    if line is None:
        raise DependencyError(f"dropbearkey -y printed no ssh-ed25519 public key: {out!r}")
    return KeyPair(path, line.strip())
