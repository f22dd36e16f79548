"""people, api_tokens, and the previous split of each deployment (observations checked against the split)

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_str = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "people",
        sa.Column("name", _str(), nullable=False),
        sa.Column("slack", _str(), nullable=True),
        sa.Column("email", _str(), nullable=True),
        sa.Column("temporal", _str(), nullable=True),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
        sa.UniqueConstraint("slack"),
        sa.UniqueConstraint("email"),
        sa.UniqueConstraint("temporal"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("name", _str(), nullable=False),
        sa.Column("token_hash", _str(), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_by", _str(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("previous_split", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("split_changed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_column("split_changed_at")
        batch_op.drop_column("previous_split")
    op.drop_table("api_tokens")
    op.drop_table("people")
