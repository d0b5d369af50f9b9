"""credential jti: each issued token's jti claim (Kubernetes 1.29+), which audit events name it by

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('credential', schema=None) as batch_op:
        batch_op.add_column(sa.Column('jti', sa.String(), nullable=True))
        batch_op.create_index(batch_op.f('ix_credential_jti'), ['jti'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('credential', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_credential_jti'))
        batch_op.drop_column('jti')
