"""stage_runs: how long each finished pipeline stage took (and, for training, how many tokens
it trained), the measured throughput that job estimates read

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stage_runs",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(length=40), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("stage", sa.String(length=24), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_stage_runs_stage_seq", "stage_runs", ["stage", "seq"])


def downgrade() -> None:
    op.drop_index("ix_stage_runs_stage_seq", table_name="stage_runs")
    op.drop_table("stage_runs")
