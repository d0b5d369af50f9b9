"""idle suspension: when each access began (access.granted_at), and the accesses suspended for want of use

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('suspension',
    sa.Column('person_id', sa.String(), nullable=False),
    sa.Column('cluster', sa.String(), nullable=False),
    sa.Column('since', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['person_id'], ['person.id'], ),
    sa.PrimaryKeyConstraint('person_id', 'cluster')
    )
    with op.batch_alter_table('access', schema=None) as batch_op:
        batch_op.add_column(sa.Column('granted_at', sa.DateTime(timezone=True), nullable=True))

    # An access recorded before grants were kept counts from its last change: later than its grant, so idleness
    # is never found early.
    op.execute(sa.text("UPDATE access SET granted_at = updated_at"))


def downgrade() -> None:
    with op.batch_alter_table('access', schema=None) as batch_op:
        batch_op.drop_column('granted_at')

    op.drop_table('suspension')
