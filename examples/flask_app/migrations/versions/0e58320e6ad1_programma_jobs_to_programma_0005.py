"""programma_jobs to programma_0005

Revision ID: 0e58320e6ad1
Revises: 60a3819a03a1
Create Date: 2026-12-05 22:46:04.612298

"""

from alembic import op

from programma_sa import migrations

# The programma_sa migration steps this revision applies to the jobs table
# (written by `programma-sa alembic revision`; the next such revision starts
# where this one ends).
programma_steps = migrations.Steps(start="programma_0004", end="programma_0005")


# revision identifiers, used by Alembic.
revision = "0e58320e6ad1"
down_revision = "60a3819a03a1"
branch_labels = None
depends_on = None


def upgrade():
    migrations.upgrade_steps(op, programma_steps)


def downgrade():
    migrations.downgrade_steps(op, programma_steps)
