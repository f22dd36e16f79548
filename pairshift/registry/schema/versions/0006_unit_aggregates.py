"""unit_aggregates: per-(migration, stage percent, variant, unit) sums kept at ingest for the stage gate

Revision ID: 0006
Revises: 0005

A canary running while this upgrade happens keeps its stage's evidence: the rows of every deployment's live
split are built from its observations since the split last changed.
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_BACKFILL = """
INSERT INTO unit_aggregates (migration, percent, variant, unit, calls, errors, invalid, score_n, score_sum,
    score_sumsq, cost_sum, cost_sumsq, first_latency_ms)
SELECT u.migration, u.percent, u.variant, u.unit, u.calls, u.errors, u.invalid, u.score_n, u.score_sum,
    u.score_sumsq, u.cost_sum, u.cost_sumsq,
    (SELECT o2.latency_ms FROM observations o2 WHERE o2.id = u.first_ok)
FROM (
    SELECT o.migration AS migration, d.canary_percent AS percent, o.variant AS variant, o.unit AS unit,
        count(*) AS calls,
        sum(CASE WHEN o.outcome = 'error' THEN 1 ELSE 0 END) AS errors,
        sum(CASE WHEN o.outcome = 'invalid' THEN 1 ELSE 0 END) AS invalid,
        count(o.score) AS score_n,
        coalesce(sum(o.score), 0) AS score_sum,
        coalesce(sum(o.score * o.score), 0) AS score_sumsq,
        sum(o.cost_usd) AS cost_sum,
        sum(o.cost_usd * o.cost_usd) AS cost_sumsq,
        min(CASE WHEN o.outcome <> 'error' THEN o.id END) AS first_ok
    FROM observations o JOIN deployments d ON o.deployment = d.name AND o.migration = d.migration
    WHERE d.migration IS NOT NULL AND d.canary_percent > 0 AND o.at >= d.updated_at
    GROUP BY o.migration, d.canary_percent, o.variant, o.unit
) u
"""


def upgrade() -> None:
    op.create_table(
        "unit_aggregates",
        sa.Column("migration", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("percent", sa.Float(), nullable=False),
        sa.Column("variant", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("unit", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("invalid", sa.Integer(), nullable=False),
        sa.Column("score_n", sa.Integer(), nullable=False),
        sa.Column("score_sum", sa.Float(), nullable=False),
        sa.Column("score_sumsq", sa.Float(), nullable=False),
        sa.Column("cost_sum", sa.Float(), nullable=False),
        sa.Column("cost_sumsq", sa.Float(), nullable=False),
        sa.Column("first_latency_ms", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("migration", "percent", "variant", "unit"),
    )
    op.create_index(
        "ix_unit_agg_latency",
        "unit_aggregates",
        ["migration", "percent", "variant", "first_latency_ms"],
    )
    op.execute(_BACKFILL)


def downgrade() -> None:
    op.drop_index("ix_unit_agg_latency", table_name="unit_aggregates")
    op.drop_table("unit_aggregates")
