"""models: request rules, cached and batch prices; eval_results: error kind, cached tokens, dropped params

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_rules", sa.JSON(), nullable=True))
        for name in ("cached_input_per_mtok", "batch_input_per_mtok", "batch_output_per_mtok"):
            batch_op.add_column(sa.Column(name, sa.Float(), nullable=True))
    with op.batch_alter_table("eval_results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("error_kind", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(
            sa.Column("cached_input_tokens", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("dropped_params", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("eval_results", schema=None) as batch_op:
        for name in ("dropped_params", "cached_input_tokens", "error_kind"):
            batch_op.drop_column(name)
    with op.batch_alter_table("models", schema=None) as batch_op:
        for name in (
            "batch_output_per_mtok",
            "batch_input_per_mtok",
            "cached_input_per_mtok",
            "request_rules",
        ):
            batch_op.drop_column(name)
