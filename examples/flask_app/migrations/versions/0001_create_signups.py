"""create signups

Revision ID: 3f1c2a9d8e01
Revises:
Create Date: 2026-11-28 12:00:00

The app's first revision, as ``flask db migrate`` generates it: without the jobs
table, which ``include_object`` in env.py leaves to the revision applying
programma's migration steps.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "3f1c2a9d8e01"
down_revision = None
branch_labels = None
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
