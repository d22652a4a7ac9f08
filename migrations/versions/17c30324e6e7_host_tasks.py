"""host tasks: durable host actions, consumed in order by the host worker

Revision ID: 17c30324e6e7
Revises: bc532a19018c
Create Date: 2026-11-30 16:30:05.154038
"""
from alembic import op
import sqlalchemy as sa


revision = '17c30324e6e7'
down_revision = 'bc532a19018c'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('host_tasks',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('resource_id', sa.String(length=64), nullable=False),
    sa.Column('zone', sa.String(length=32), nullable=True),
    sa.Column('args', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('host_tasks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_host_tasks_resource_id'), ['resource_id'], unique=False)
        batch_op.create_index('ix_host_tasks_state', ['state', 'id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('host_tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_host_tasks_state')
        batch_op.drop_index(batch_op.f('ix_host_tasks_resource_id'))

    op.drop_table('host_tasks')
