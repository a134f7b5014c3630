"""row versions of jobs and safety reports: the validator of a conditional poll

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("jobs", "safety_reports"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("version", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    for table in ("jobs", "safety_reports"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("version")
