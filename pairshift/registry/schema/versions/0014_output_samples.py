"""output_samples: redacted example outputs (the invalid outputs a migration report shows per failing check)

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "output_samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("migration", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("pair", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("variant", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("detail", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("input", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("output", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_output_samples_at", "output_samples", ["at"], unique=False)
    op.create_index(
        "ix_output_samples_migration",
        "output_samples",
        ["deployment", "migration", "kind", "at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_output_samples_migration", table_name="output_samples")
    op.drop_index("ix_output_samples_at", table_name="output_samples")
    op.drop_table("output_samples")
