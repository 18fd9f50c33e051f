"""create signups

Revision ID: 3f1c2a9d8e01
Revises:
Create Date: 2026-11-28 12:00:00

The app's first revision: what ``flask db migrate`` generates (without the jobs
table: ``include_object`` in env.py leaves it to programma's chain), plus a branch
label naming the app's chain, so that ``flask db migrate --head app@head`` can say
which of the two heads a new revision follows.
"""

import sqlalchemy as sa

from alembic import op

# revision identifiers, used by Alembic.
revision = "3f1c2a9d8e01"
down_revision = None
branch_labels = ("app",)
depends_on = None


def upgrade():
    op.create_table(
        "signups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("welcome_job_id", sa.Uuid(), nullable=False),
        sa.Column("welcomed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
    )


def downgrade():
    op.drop_table("signups")
