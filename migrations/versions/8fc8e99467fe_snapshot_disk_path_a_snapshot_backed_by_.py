"""snapshot disk path: a snapshot backed by a host image file (the public images' root snapshots)

Revision ID: 8fc8e99467fe
Revises: 6eca87d1886c
"""
from alembic import op
from sqlalchemy import Column, Text

revision = '8fc8e99467fe'
down_revision = '6eca87d1886c'
branch_labels = depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('snapshots') as batch_op:
        batch_op.add_column(Column('disk_path', Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('snapshots') as batch_op:
        batch_op.drop_column('disk_path')
