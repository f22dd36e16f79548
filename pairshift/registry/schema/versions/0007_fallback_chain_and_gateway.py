"""fallback chain and gateway: deployments.fallback and deployments.prompt_external; observations.served_pair
(which pair of the chain served a `fallback`), prompt_version (the app's X-Pairshift-Prompt), ttft_ms;
deployments.redact and the captures / captured_cases tables of `pairshift datasets capture`

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fallback", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("prompt_external", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("redact", sa.JSON(), nullable=True))
    with op.batch_alter_table("observations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("served_pair", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("prompt_version", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("ttft_ms", sa.Float(), nullable=True))
    op.create_table(
        "captures",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("deployment", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("sample_rate", sa.Float(), nullable=False),
        sa.Column("max_cases", sa.Integer(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("redact", sa.JSON(), nullable=True),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("finished_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("dataset_version", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_captures_deployment", "captures", ["deployment"])
    op.create_table(
        "captured_cases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("capture", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_captured_cases_capture", "captured_cases", ["capture"])


def downgrade() -> None:
    op.drop_index("ix_captured_cases_capture", table_name="captured_cases")
    op.drop_table("captured_cases")
    op.drop_index("ix_captures_deployment", table_name="captures")
    op.drop_table("captures")
    with op.batch_alter_table("observations", schema=None) as batch_op:
        batch_op.drop_column("ttft_ms")
        batch_op.drop_column("prompt_version")
        batch_op.drop_column("served_pair")
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_column("redact")
        batch_op.drop_column("prompt_external")
        batch_op.drop_column("fallback")
