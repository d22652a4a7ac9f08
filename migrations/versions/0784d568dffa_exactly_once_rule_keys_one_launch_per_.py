"""exactly once: rule keys, one launch per client token (invariants in the database, so that
several API processes on one database keep them)

Revision ID: 0784d568dffa
Revises: 17c30324e6e7
Create Date: 2026-11-30 17:26:27.687500
"""
from alembic import op
import sqlalchemy as sa


revision = '0784d568dffa'
down_revision = '17c30324e6e7'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_instances_client_token', ['account_id', 'region', 'client_token', 'launch_index'])

    with op.batch_alter_table('security_group_rules', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rule_key', sa.String(length=200), nullable=True))
    # Existing rules get their key as security_groups.rule_key writes it ('' for NULL).
    op.execute("UPDATE security_group_rules SET rule_key = ip_protocol || '|' || CAST(from_port AS VARCHAR)"
               " || '|' || CAST(to_port AS VARCHAR) || '|' || COALESCE(cidr_ipv4, '') || '|'"
               " || COALESCE(cidr_ipv6, '') || '|' || COALESCE(prefix_list_id, '') || '|'"
               " || COALESCE(referenced_group_id, '')")
    with op.batch_alter_table('security_group_rules', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_security_group_rules_key', ['group_id', 'is_egress', 'rule_key'])



def downgrade() -> None:
    with op.batch_alter_table('security_group_rules', schema=None) as batch_op:
        batch_op.drop_constraint('uq_security_group_rules_key', type_='unique')
        batch_op.drop_column('rule_key')

    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_constraint('uq_instances_client_token', type_='unique')

