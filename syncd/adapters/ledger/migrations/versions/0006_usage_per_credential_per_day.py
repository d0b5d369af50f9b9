"""usage: what each credential did per day, from the API server's audit events

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('usage_day',
    sa.Column('person_key', sa.String(), nullable=False),
    sa.Column('cluster', sa.String(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('credential_id', sa.String(), nullable=False),
    sa.Column('first_use', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_use', sa.DateTime(timezone=True), nullable=False),
    sa.Column('requests', sa.Integer(), nullable=False),
    sa.Column('denied', sa.Integer(), nullable=False),
    sa.Column('source_ips', sa.String(), nullable=False),
    sa.Column('user_agents', sa.String(), nullable=False),
    sa.Column('verbs', sa.String(), nullable=False),
    sa.Column('resources', sa.String(), nullable=False),
    sa.Column('namespaces', sa.String(), nullable=False),
    sa.PrimaryKeyConstraint('person_key', 'cluster', 'day', 'credential_id')
    )


def downgrade() -> None:
    op.drop_table('usage_day')
