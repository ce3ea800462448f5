"""withdrawn uploads: an upload's cells taken out of their case before sign-off

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 21:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cells', schema=None) as batch_op:
        batch_op.add_column(sa.Column('withdrawn', sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.add_column(sa.Column('withdrawn_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('withdrawn_by_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('withdraw_reason', sa.Text(), nullable=True))
        batch_op.create_foreign_key('fk_uploads_withdrawn_by_id_users', 'users', ['withdrawn_by_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.drop_constraint('fk_uploads_withdrawn_by_id_users', type_='foreignkey')
        batch_op.drop_column('withdraw_reason')
        batch_op.drop_column('withdrawn_by_id')
        batch_op.drop_column('withdrawn_at')
    with op.batch_alter_table('cells', schema=None) as batch_op:
        batch_op.drop_column('withdrawn')
