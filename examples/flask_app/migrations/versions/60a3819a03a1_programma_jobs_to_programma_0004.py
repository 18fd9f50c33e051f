"""programma_jobs to programma_0004

Revision ID: 60a3819a03a1
Revises: 736c0aa782e4
Create Date: 2026-12-05 20:56:42.889865

"""

from alembic import op

from programma_sa import migrations

# The programma_sa migration steps this revision applies to the jobs table
# (written by `programma-sa alembic revision`; the next such revision starts
# where this one ends).
programma_steps = migrations.Steps(start="programma_0002", end="programma_0004")


# revision identifiers, used by Alembic.
revision = "60a3819a03a1"
down_revision = "736c0aa782e4"
branch_labels = None
depends_on = None


def upgrade():
    migrations.upgrade_steps(op, programma_steps)


def downgrade():
    migrations.downgrade_steps(op, programma_steps)
