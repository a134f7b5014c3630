"""a job's experiment-tracking integrations (OpenAI's ``integrations``) and the released
model it continues training from (``model="ft:…"``)

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("integrations", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("parent_model", sa.String(length=300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("parent_model")
        batch.drop_column("integrations")
