"""`chargeops ca`: the built-in certificate authority on the command line.

`chargeops ca issue CP001 --out DIR` gives a station what it needs for its first connection with security
profile 3: a new key (`CP001.key`, mode 0600), its certificate signed by the CA (`CP001.pem`, CN = the
charge point id, O = `--ca-organization`) and the CA's root (`ca.pem`: the server's `--tls-client-ca`).
The certificate is recorded as issued to the station (`GET /api/chargers/{id}/certificates`), so it is
renewed before it expires like one signed from the station's own CSR. `chargeops ca root` prints the root.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer

from ops.cli_options import DatabaseUrl, Opt, given_settings

ca_app = typer.Typer(
    help="The built-in certificate authority (stations' certificates).", no_args_is_help=True
)
CaDir = Annotated[Path | None, Opt("ca_dir", "the CA's directory, made on first use (./chargeops-ca)")]
CaOrganization = Annotated[str | None, Opt("ca_organization", "the operator's organization (O)")]


def register(app: typer.Typer) -> None:
    app.add_typer(ca_app, name="ca")


@ca_app.command("issue")
def issue(
    charger_id: Annotated[str, typer.Argument(metavar="ID", help="charge point id (the certificate's CN)")],
    out: Annotated[Path, typer.Option(help="directory to write ID.key, ID.pem and ca.pem to")],
    ca_dir: CaDir = None,
    ca_organization: CaOrganization = None,
    ca_certificate_days: Annotated[int | None, Opt("ca_certificate_days", "days it is valid (365)")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Issue a security-profile-3 client certificate (and its key) for a station."""
    from chargeops.db.certificate_models import IssuedCertificate
    from chargeops.db.engine import make_engine, make_sessionmaker
    from chargeops.db.migrate import is_empty, upgrade
    from chargeops.ids import CHARGER_ID_RE
    from ops.certificates import builtin_ca
    from ops.startup import fail

    if not CHARGER_ID_RE.match(charger_id):
        typer.echo(f"error: {charger_id!r} is not a charge point id", err=True)
        raise typer.Exit(2)
    settings = None
    try:
        settings = given_settings(
            database_url=database_url,
            ca_dir=ca_dir,
            ca_organization=ca_organization,
            ca_certificate_days=ca_certificate_days,
        )
        ca = builtin_ca(settings)
        issued, key_pem = ca.issue_client(charger_id)
        out.mkdir(parents=True, exist_ok=True)
        key_path = out / f"{charger_id}.key"
        key_path.unlink(missing_ok=True)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as key_file:
            key_file.write(key_pem)
        (out / f"{charger_id}.pem").write_text(issued.chain_pem)
        (out / "ca.pem").write_text(ca.root_pem())

        async def record(url: str) -> None:
            engine = make_engine(url)
            try:
                if await is_empty(engine):
                    await upgrade(engine)
                async with make_sessionmaker(engine)() as session, session.begin():
                    session.add(IssuedCertificate.of(charger_id, issued, "cli"))
            finally:
                await engine.dispose()

        asyncio.run(record(settings.database_url))
    except Exception as exc:
        fail(exc, settings)
    typer.echo(
        f"issued {charger_id}: serial {issued.serial}, valid to {issued.not_after.date().isoformat()}; "
        f"{out / charger_id}.pem, {key_path} (0600), {out / 'ca.pem'}"
    )


@ca_app.command("root")
def root(ca_dir: CaDir = None, ca_organization: CaOrganization = None) -> None:
    """Print the CA's root certificate (PEM), making the CA if there is none yet."""
    from ops.certificates import builtin_ca

    typer.echo(
        builtin_ca(given_settings(ca_dir=ca_dir, ca_organization=ca_organization)).root_pem(), nl=False
    )
