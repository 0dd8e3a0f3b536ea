"""certificate management: certificates the CA issued, those a station has installed, certificate calls

`issued_certificates` keeps what chargeops's CA signed per station (serial, type, validity, the chain sent)
and the station's CertificateSigned answer; `installed_certificates` the station's latest
GetInstalledCertificateIds answer; `certificate_operations` the outcome of every certificate call (install,
list, delete, CertificateSigned, the renewal trigger). New tables: no existing data to carry over.

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "issued_certificates",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("certificate_type", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("not_before", TZ, nullable=False),
        sa.Column("not_after", TZ, nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=False),
        sa.Column("issued_at", TZ, nullable=False),
        sa.Column("delivery", sa.String(length=16), nullable=True),
        sa.Column("delivered_at", TZ, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("serial"),
    )
    op.create_index(
        "ix_issued_certificates_charger_expiry", "issued_certificates", ["charger_id", "not_after"]
    )
    op.create_table(
        "installed_certificates",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("certificate_type", sa.String(length=40), nullable=False),
        sa.Column("hash_algorithm", sa.String(length=8), nullable=False),
        sa.Column("issuer_name_hash", sa.String(length=128), nullable=False),
        sa.Column("issuer_key_hash", sa.String(length=128), nullable=False),
        sa.Column("serial_number", sa.String(length=40), nullable=False),
        sa.Column("children", sa.JSON(), nullable=True),
        sa.Column("reported_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_installed_certificates_charger_id", "installed_certificates", ["charger_id"], unique=False
    )
    op.create_table(
        "certificate_operations",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_certificate_operations_charger_action", "certificate_operations", ["charger_id", "action", "at"]
    )


def downgrade() -> None:
    op.drop_index("ix_certificate_operations_charger_action", table_name="certificate_operations")
    op.drop_table("certificate_operations")
    op.drop_index("ix_installed_certificates_charger_id", table_name="installed_certificates")
    op.drop_table("installed_certificates")
    op.drop_index("ix_issued_certificates_charger_expiry", table_name="issued_certificates")
    op.drop_table("issued_certificates")
