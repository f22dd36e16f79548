"""fallback chain and gateway: deployments.fallback and deployments.prompt_external; observations.served_pair
(which pair of the chain served a `fallback`), prompt_version (the app's X-Pairshift-Prompt), ttft_ms

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
    with op.batch_alter_table("observations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("served_pair", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("prompt_version", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("ttft_ms", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("observations", schema=None) as batch_op:
        batch_op.drop_column("ttft_ms")
        batch_op.drop_column("prompt_version")
        batch_op.drop_column("served_pair")
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_column("prompt_external")
        batch_op.drop_column("fallback")
