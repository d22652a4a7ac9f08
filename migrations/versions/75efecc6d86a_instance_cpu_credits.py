"""instance cpu credits: a burstable instance's CPU credit option (standard | unlimited)

Revision ID: 75efecc6d86a
Revises: 0784d568dffa
"""
from alembic import op
from sqlalchemy import Column, String

revision = '75efecc6d86a'
down_revision = '0784d568dffa'
branch_labels = depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('instances') as batch_op:
        batch_op.add_column(Column('cpu_credits', String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('instances') as batch_op:
        batch_op.drop_column('cpu_credits')
