"""Certificates made in the test with the openssl CLI: a throwaway CA, an RSA and an ECDSA (P-256) server
certificate for 127.0.0.1, and client certificates whose CN is a charge point id (security profile 3)."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

SERVER_NAME = "127.0.0.1"


def openssl(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(["openssl", *args], check=True, capture_output=True, text=True, input=stdin)
    return done.stdout


def new_key(path: Path, kind: str = "rsa") -> Path:
    """An unencrypted private key: `rsa` (2048 bits, A00.FR.502's minimum) or `ec` (prime256v1)."""
    algo = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"] if kind == "rsa" else [
        "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1"
    ]  # fmt: skip
    openssl("genpkey", *algo, "-out", str(path))
    return path


def make_ca(d: Path, name: str = "ca", cn: str = "chargeops test CA") -> Path:
    key = new_key(d / f"{name}.key")
    openssl("req", "-x509", "-new", "-key", str(key), "-out", str(d / f"{name}.pem"), "-days", "2",
            "-subj", f"/CN={cn}")  # fmt: skip
    return d / f"{name}.pem"


def issue(d: Path, name: str, cn: str, kind: str = "rsa", ca: str = "ca", server: bool = False) -> Path:
    """`d/name.pem` + `d/name.key` signed by `d/ca.pem`; a server certificate names 127.0.0.1 in its
    subjectAltName too (A00.FR.510: CN is the endpoint's name)."""
    key = new_key(d / f"{name}.key", kind)
    csr = d / f"{name}.csr"
    openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", f"/CN={cn}")
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName=IP:{SERVER_NAME}\n" if server else "basicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(d / f"{ca}.pem"), "-CAkey", str(d / f"{ca}.key"),
            "-set_serial", str(secrets.randbelow(2**62) + 1), "-out", str(d / f"{name}.pem"),
            "-days", "2", "-extfile", str(ext))  # fmt: skip
    return d / f"{name}.pem"


def make_pki(d: Path) -> Path:
    """ca.pem; server.pem/.key (RSA), server-ec.pem/.key (ECDSA); client.pem/.key (RSA, CN=CP-TLS3),
    client-ec.pem/.key (ECDSA, CN=CP-TLS3-EC); a second CA, other-ca.pem, that nothing here trusts, and
    client-rogue.pem/.key (CN=CP-TLS3) signed by it."""
    make_ca(d)
    issue(d, "server", SERVER_NAME, "rsa", server=True)
    issue(d, "server-ec", SERVER_NAME, "ec", server=True)
    issue(d, "client", "CP-TLS3", "rsa")
    issue(d, "client-ec", "CP-TLS3-EC", "ec")
    make_ca(d, "other-ca", "somebody else's CA")
    issue(d, "client-rogue", "CP-TLS3", "rsa", ca="other-ca")
    return d
