"""Block A preparation the OCTT port (issue 11) needed and could not do: `chargeops ca root` / `ca issue`
(the profile 3 client certificate of TC_A_11 / TC_A_14 / TC_A_19) crashed with a circular import when run
as a command, in a fresh interpreter (`ops.certificates` imported `ops.api` at run time, which imports it
back); the in-process CLI tests never saw it because `ops.api` was already loaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cryptography import x509


def test_tc_a_11_ca_root_runs_as_a_command(tmp_path: Path) -> None:
    """The installed `chargeops` script, as an operator runs it: prints the built-in CA's root (made now)."""
    chargeops = Path(sys.executable).with_name("chargeops")
    done = subprocess.run(
        [str(chargeops), "ca", "root", "--ca-dir", str(tmp_path / "ca"), "--ca-organization", "octt"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    root = x509.load_pem_x509_certificate(done.stdout.encode())
    assert root.subject == root.issuer  # self-signed root
    assert (tmp_path / "ca" / "ca.pem").read_text() == done.stdout
