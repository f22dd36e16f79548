"""observations.detail (why an output is invalid) and observation_losses (what writers dropped per stage)

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("observations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("detail", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    op.create_table(
        "observation_losses",
        sa.Column("migration", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("percent", sa.Float(), nullable=False),
        sa.Column("variant", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("lost", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("migration", "percent", "variant"),
    )


def downgrade() -> None:
    op.drop_table("observation_losses")
    with op.batch_alter_table("observations", schema=None) as batch_op:
        batch_op.drop_column("detail")
