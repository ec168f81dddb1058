"""Per-run SSH keys: a client key for the testbed and a host key for the guest's sshd.

Both are ed25519 and made fresh for every machine. The guest's host key is generated here, on
the host, and its public half is pinned in the SSH client, so the testbed never accepts an
unknown host key.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


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


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def dropbear_ed25519(key: Ed25519PrivateKey) -> bytes:
    """``key`` in dropbear's private key format (what ``dropbearkey -t ed25519`` writes):
    string "ssh-ed25519", uint32 64, the 32-byte seed, the 32-byte public key."""
    seed = key.private_bytes_raw()
    public = key.public_key().public_bytes_raw()
    return _ssh_string(b"ssh-ed25519") + _ssh_string(seed + public)


def guest_host_key(folder: Path) -> KeyPair:
    """A new host key for dropbear, in dropbear's own format, with its OpenSSH public line.

    Written here rather than by ``dropbearkey``: one subprocess less on every boot.
    """
    key = Ed25519PrivateKey.generate()
    path = folder / "guest_host_key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(dropbear_ed25519(key))
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return KeyPair(path, public.decode())
