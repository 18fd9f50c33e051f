"""programma_jobs to programma_0002

Revision ID: 736c0aa782e4
Revises: 3f1c2a9d8e01
Create Date: 2026-12-05 20:21:32.476360

"""

from alembic import op

from programma_sa import migrations

# The programma_sa migration steps this revision applies to the jobs table
# (written by `programma-sa alembic revision`; the next such revision starts
# where this one ends).
programma_steps = migrations.Steps(start=None, end="programma_0002")


# revision identifiers, used by Alembic.
revision = "736c0aa782e4"
down_revision = "3f1c2a9d8e01"
branch_labels = None
depends_on = None


def upgrade():
    migrations.upgrade_steps(op, programma_steps)


def downgrade():
    migrations.downgrade_steps(op, programma_steps)
