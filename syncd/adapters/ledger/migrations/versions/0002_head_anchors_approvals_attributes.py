"""head anchors, approved runs, the policy's attributes of each person, held events indexed

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ledger_head',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('hash', sa.String(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_event_result'), ['result'], unique=False)

    with op.batch_alter_table('person', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attributes', sa.String(), nullable=False, server_default='{}'))

    with op.batch_alter_table('run', schema=None) as batch_op:
        batch_op.add_column(sa.Column('approved', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('head_seq', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('head_hash', sa.String(), nullable=True))

    # The anchor starts at the chain's newest event (or before the first one), as the events stand now.
    op.execute(sa.text("INSERT INTO ledger_head (id, seq, hash) SELECT 1, coalesce(max(seq), 0), "
                       "coalesce((SELECT hash FROM event ORDER BY seq DESC LIMIT 1), :genesis) FROM event")
               .bindparams(genesis="0" * 64))


def downgrade() -> None:
    with op.batch_alter_table('run', schema=None) as batch_op:
        batch_op.drop_column('head_hash')
        batch_op.drop_column('head_seq')
        batch_op.drop_column('approved')

    with op.batch_alter_table('person', schema=None) as batch_op:
        batch_op.drop_column('attributes')

    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_event_result'))

    op.drop_table('ledger_head')
