"""eval_runs: the evidence key a baseline is reused by (what determines its answers)

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("eval_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("evidence_key", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.create_index("ix_eval_runs_evidence_key", ["evidence_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("eval_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_eval_runs_evidence_key")
        batch_op.drop_column("evidence_key")
