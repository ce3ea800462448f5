"""first_run: one row, so that two simultaneous first-run setups make one administrator

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 00:05:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('first_run',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('admin_id', sa.Integer(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('id = 1', name=op.f('ck_first_run_single_row')),
    sa.ForeignKeyConstraint(['admin_id'], ['users.id'], name=op.f('fk_first_run_admin_id_users'),
                            ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_first_run'))
    )
    # a database set up before this table existed is already past its first run
    op.execute("INSERT INTO first_run (id, admin_id, at) "
               "SELECT 1, MIN(id), CURRENT_TIMESTAMP FROM users HAVING COUNT(*) > 0")


def downgrade() -> None:
    op.drop_table('first_run')
