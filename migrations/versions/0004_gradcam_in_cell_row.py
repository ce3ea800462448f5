"""gradcam in the cell row: the small Grad-CAM map an overlay is drawn from

Cells processed before keep their heatmap PNG beside the overlay path in the storage folder;
the web app still draws their overlays from it (app.cells.overlays).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 17:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cells', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gradcam', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('cells', schema=None) as batch_op:
        batch_op.drop_column('gradcam')
