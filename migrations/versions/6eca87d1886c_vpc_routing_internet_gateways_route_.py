"""vpc routing: internet gateways, route tables, routes, associations, dhcp options, network acls

Revision ID: 6eca87d1886c
Revises: c69932c036a9
Create Date: 2026-11-30 20:12:40.087496
"""
from alembic import op
import sqlalchemy as sa


revision = '6eca87d1886c'
down_revision = 'c69932c036a9'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dhcp_options',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('configurations', sa.JSON(), nullable=False),
    sa.Column('is_default', sa.Boolean(), nullable=False),
    sa.Column('account_id', sa.String(length=12), nullable=False),
    sa.Column('region', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('dhcp_options', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dhcp_options_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_dhcp_options_region'), ['region'], unique=False)

    op.create_table('internet_gateways',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('vpc_id', sa.String(length=32), nullable=True),
    sa.Column('account_id', sa.String(length=12), nullable=False),
    sa.Column('region', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('vpc_id')
    )
    with op.batch_alter_table('internet_gateways', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_internet_gateways_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_internet_gateways_region'), ['region'], unique=False)

    op.create_table('network_acls',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('vpc_id', sa.String(length=32), nullable=False),
    sa.Column('is_default', sa.Boolean(), nullable=False),
    sa.Column('entries', sa.JSON(), nullable=False),
    sa.Column('account_id', sa.String(length=12), nullable=False),
    sa.Column('region', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('network_acls', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_network_acls_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_network_acls_region'), ['region'], unique=False)
        batch_op.create_index(batch_op.f('ix_network_acls_vpc_id'), ['vpc_id'], unique=False)

    op.create_table('route_table_associations',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('route_table_id', sa.String(length=32), nullable=False),
    sa.Column('vpc_id', sa.String(length=32), nullable=False),
    sa.Column('subnet_id', sa.String(length=32), nullable=True),
    sa.Column('main', sa.Boolean(), nullable=False),
    sa.Column('main_of', sa.String(length=32), nullable=True),
    sa.Column('account_id', sa.String(length=12), nullable=False),
    sa.Column('region', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('main_of'),
    sa.UniqueConstraint('subnet_id')
    )
    with op.batch_alter_table('route_table_associations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_route_table_associations_route_table_id'), ['route_table_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_route_table_associations_vpc_id'), ['vpc_id'], unique=False)

    op.create_table('route_tables',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('vpc_id', sa.String(length=32), nullable=False),
    sa.Column('account_id', sa.String(length=12), nullable=False),
    sa.Column('region', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('route_tables', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_route_tables_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_route_tables_region'), ['region'], unique=False)
        batch_op.create_index(batch_op.f('ix_route_tables_vpc_id'), ['vpc_id'], unique=False)

    op.create_table('routes',
    sa.Column('route_table_id', sa.String(length=32), nullable=False),
    sa.Column('destination', sa.String(length=64), nullable=False),
    sa.Column('gateway_id', sa.String(length=32), nullable=True),
    sa.Column('nat_gateway_id', sa.String(length=32), nullable=True),
    sa.Column('instance_id', sa.String(length=32), nullable=True),
    sa.Column('network_interface_id', sa.String(length=32), nullable=True),
    sa.Column('origin', sa.String(length=32), nullable=False),
    sa.Column('account_id', sa.String(length=12), nullable=False),
    sa.Column('region', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('route_table_id', 'destination')
    )
    with op.batch_alter_table('subnets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attributes', sa.JSON(), nullable=True))


    _existing_vpcs_get_their_defaults()


def _existing_vpcs_get_their_defaults() -> None:
    """VPCs made before this revision (default VPCs) get what every VPC has: a main route table
    with its local route, and the default network ACL; a default VPC also its internet gateway
    and the main table's route to it, as AWS makes them."""
    import secrets
    from datetime import datetime, timezone

    def new_id(prefix: str) -> str:
        return f"{prefix}-{secrets.token_hex(9)[:17]}"

    now = datetime.now(timezone.utc)
    vpcs = sa.table("vpcs", sa.column("id"), sa.column("account_id"), sa.column("region"), sa.column("cidr_block"),
                    sa.column("is_default", sa.Boolean))
    gateways = sa.table("internet_gateways", sa.column("id"), sa.column("vpc_id"), sa.column("account_id"),
                        sa.column("region"), sa.column("created_at"))
    tables = sa.table("route_tables", sa.column("id"), sa.column("vpc_id"), sa.column("account_id"),
                      sa.column("region"), sa.column("created_at"))
    routes = sa.table("routes", sa.column("route_table_id"), sa.column("destination"), sa.column("origin"),
                      sa.column("gateway_id"), sa.column("account_id"), sa.column("region"))
    assocs = sa.table("route_table_associations", sa.column("id"), sa.column("route_table_id"),
                      sa.column("vpc_id"), sa.column("subnet_id"), sa.column("main"), sa.column("main_of"),
                      sa.column("account_id"), sa.column("region"))
    acls = sa.table("network_acls", sa.column("id"), sa.column("vpc_id"), sa.column("is_default"),
                    sa.column("entries", sa.JSON), sa.column("account_id"), sa.column("region"),
                    sa.column("created_at"))
    bind = op.get_bind()
    for vpc_id, account, region, cidr, is_default in bind.execute(sa.select(
            vpcs.c.id, vpcs.c.account_id, vpcs.c.region, vpcs.c.cidr_block, vpcs.c.is_default)).all():
        scope = {"account_id": account, "region": region}
        rtb = new_id("rtb")
        bind.execute(tables.insert().values(id=rtb, vpc_id=vpc_id, created_at=now, **scope))
        bind.execute(routes.insert().values(route_table_id=rtb, destination=cidr, origin="CreateRouteTable",
                                            **scope))
        if is_default:
            igw = new_id("igw")
            bind.execute(gateways.insert().values(id=igw, vpc_id=vpc_id, created_at=now, **scope))
            bind.execute(routes.insert().values(route_table_id=rtb, destination="0.0.0.0/0", gateway_id=igw,
                                                origin="CreateRoute", **scope))
        bind.execute(assocs.insert().values(id=new_id("rtbassoc"), route_table_id=rtb, vpc_id=vpc_id,
                                            subnet_id=None, main=True, main_of=vpc_id, **scope))
        entries = [{"RuleNumber": n, "Protocol": "-1", "RuleAction": action, "Egress": egress,
                    "CidrBlock": "0.0.0.0/0"}
                   for egress in (False, True) for n, action in ((100, "allow"), (32767, "deny"))]
        bind.execute(acls.insert().values(id=new_id("acl"), vpc_id=vpc_id, is_default=True, entries=entries,
                                          created_at=now, **scope))


def downgrade() -> None:
    with op.batch_alter_table('subnets', schema=None) as batch_op:
        batch_op.drop_column('attributes')

    op.drop_table('routes')
    with op.batch_alter_table('route_tables', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_route_tables_vpc_id'))
        batch_op.drop_index(batch_op.f('ix_route_tables_region'))
        batch_op.drop_index(batch_op.f('ix_route_tables_account_id'))

    op.drop_table('route_tables')
    with op.batch_alter_table('route_table_associations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_route_table_associations_vpc_id'))
        batch_op.drop_index(batch_op.f('ix_route_table_associations_route_table_id'))

    op.drop_table('route_table_associations')
    with op.batch_alter_table('network_acls', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_network_acls_vpc_id'))
        batch_op.drop_index(batch_op.f('ix_network_acls_region'))
        batch_op.drop_index(batch_op.f('ix_network_acls_account_id'))

    op.drop_table('network_acls')
    with op.batch_alter_table('internet_gateways', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_internet_gateways_region'))
        batch_op.drop_index(batch_op.f('ix_internet_gateways_account_id'))

    op.drop_table('internet_gateways')
    with op.batch_alter_table('dhcp_options', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dhcp_options_region'))
        batch_op.drop_index(batch_op.f('ix_dhcp_options_account_id'))

    op.drop_table('dhcp_options')

