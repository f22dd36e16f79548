"""shadow stage: deployments.shadow_percent (the mirror share) and shadow_pairs (both arms' answers)

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("shadow_percent", sa.Float(), nullable=False, server_default="0"))
    text = sqlmodel.sql.sqltypes.AutoString
    op.create_table(
        "shadow_pairs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment", text(), nullable=False),
        sa.Column("migration", text(), nullable=False),
        sa.Column("shadow", sa.Float(), nullable=False),
        sa.Column("unit", text(), nullable=False),
        sa.Column("control_pair", text(), nullable=False),
        sa.Column("candidate_pair", text(), nullable=False),
        sa.Column("input", text(), nullable=False),
        sa.Column("control_output", text(), nullable=False),
        sa.Column("candidate_output", text(), nullable=True),
        sa.Column("control_outcome", text(), nullable=False),
        sa.Column("control_latency_ms", sa.Float(), nullable=False),
        sa.Column("control_cost_usd", sa.Float(), nullable=False),
        sa.Column("candidate_outcome", text(), nullable=False),
        sa.Column("candidate_latency_ms", sa.Float(), nullable=True),
        sa.Column("candidate_cost_usd", sa.Float(), nullable=False),
        sa.Column("candidate_detail", text(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("verdict", text(), nullable=True),
        sa.Column("judge_cost_usd", sa.Float(), nullable=True),
        sa.Column("judged_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_shadow_pairs_at", "shadow_pairs", ["at"], unique=False)
    op.create_index("ix_shadow_pairs_stage", "shadow_pairs", ["migration", "shadow", "unit"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_shadow_pairs_stage", table_name="shadow_pairs")
    op.drop_index("ix_shadow_pairs_at", table_name="shadow_pairs")
    op.drop_table("shadow_pairs")
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_column("shadow_percent")
