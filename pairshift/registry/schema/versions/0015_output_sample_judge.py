"""output_samples: the canary judge's samples (unit, percent) and verdicts (score, cost_usd, judged_at)

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("output_samples", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unit", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("percent", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("score", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("cost_usd", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("judged_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("output_samples", schema=None) as batch_op:
        for column in ("judged_at", "cost_usd", "score", "percent", "unit"):
            batch_op.drop_column(column)
