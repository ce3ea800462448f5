"""lab categories: the lab's list, each case's snapshot of it, the case's model, unidentified reasons

Existing cases get the default list (a superset of the seven-class model's codes, so every
label they hold stays a category of their list).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# A copy, not an import: a migration must keep doing what it did when app code changes.
DEFAULT = [
    ("BLA", "Blast", "b", True, "myeloid"), ("PMO", "Promyelocyte", "p", True, "myeloid"),
    ("MYB", "Myelocyte", "y", True, "myeloid"), ("MMZ", "Metamyelocyte", "t", True, "myeloid"),
    ("NGB", "Band neutrophil", "d", True, "myeloid"), ("NGS", "Segmented neutrophil", "n", True, "myeloid"),
    ("EOS", "Eosinophil", "e", True, "myeloid"), ("BAS", "Basophil", "s", True, "myeloid"),
    ("MON", "Monocyte", "m", True, "monocytic"), ("LYT", "Lymphocyte", "l", True, "lymphoid"),
    ("PLM", "Plasma cell", "c", True, "plasma"), ("EBO", "Erythroblast", "r", True, "erythroid"),
    ("OTH", "Other nucleated cell", "o", True, "other"), ("NIF", "Not identifiable", "x", False, ""),
    ("PLT", "Platelet", "k", False, "megakaryocytic"), ("ART", "Artefact", "f", False, ""),
]


def upgrade() -> None:
    table = op.create_table('lab_categories',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=8), nullable=False),
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('key', sa.String(length=1), nullable=False),
    sa.Column('counted', sa.Boolean(), nullable=False),
    sa.Column('lineage', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lab_categories')),
    sa.UniqueConstraint('code', name=op.f('uq_lab_categories_code')),
    sa.UniqueConstraint('key', name=op.f('uq_lab_categories_key'))
    )
    op.bulk_insert(table, [{"position": i, "code": c, "name": n, "key": k, "counted": counted, "lineage": lin}
                           for i, (c, n, k, counted, lin) in enumerate(DEFAULT)])
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('categories', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('model_name', sa.String(length=120), nullable=True))
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('unidentified', sa.String(length=255), nullable=True))
    snapshot = [{"code": c, "name": n, "key": k, "counted": counted, "lineage": lin}
                for c, n, k, counted, lin in DEFAULT]
    cases = sa.table('cases', sa.column('categories', sa.JSON()))
    op.execute(cases.update().where(cases.c.categories.is_(None)).values(categories=snapshot))


def downgrade() -> None:
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.drop_column('unidentified')
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_column('model_name')
        batch_op.drop_column('categories')
    op.drop_table('lab_categories')
