"""pushed SCIM resources: a version per resource, the keys SCIM compares (unique userName / group displayName per
source, externalId), each group's members as rows

Revision ID: 0003
Revises: 0002

Existing rows get version 1 and their keys in the form SCIM compares by default (NFC, lowercase but for externalId).
Where two resources of a source already share a key (group displayNames were never unique), the first by id keeps
it and the others get none: their next write (a rename, or a 409) settles it.
"""

import json
import unicodedata

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def _fold(value: object) -> str | None:
    return unicodedata.normalize("NFC", value).lower() if isinstance(value, str) else None


def _fill_keys() -> None:
    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT tenant, resource_type, id, body, source FROM scim_resource "
                                      "ORDER BY source, resource_type, tenant, id")).all()
    taken: set[tuple[str, str, str]] = set()
    for tenant, kind, resource_id, text, source in rows:
        body = json.loads(text)
        name = body.get("userName" if kind == "User" else "displayName")
        unique = _fold(name)
        if (source, kind, unique) in taken:
            unique = None
        elif unique is not None:
            taken.add((source, kind, unique))
        external = body.get("externalId")
        connection.execute(sa.text(
            "UPDATE scim_resource SET unique_key = :unique, external_key = :external, display = :display "
            "WHERE tenant = :tenant AND resource_type = :kind AND id = :id"), {
            "unique": unique, "external": unicodedata.normalize("NFC", external) if isinstance(external, str) else None,
            "display": name if kind == "Group" and isinstance(name, str) else None,
            "tenant": tenant, "kind": kind, "id": resource_id})
        members = {m["value"] for m in body.get("members") or [] if isinstance(m, dict) and m.get("value")}
        if kind == "Group" and members:
            connection.execute(sa.text("INSERT INTO scim_member (tenant, group_id, user_id) VALUES "
                                       "(:tenant, :group, :user)"),
                               [{"tenant": tenant, "group": resource_id, "user": user} for user in sorted(members)])


def upgrade() -> None:
    op.create_table('scim_member',
    sa.Column('tenant', sa.String(), nullable=False),
    sa.Column('group_id', sa.String(), nullable=False),
    sa.Column('user_id', sa.String(), nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'group_id', 'user_id')
    )
    with op.batch_alter_table('scim_member', schema=None) as batch_op:
        batch_op.create_index('ix_scim_member_user', ['tenant', 'user_id'], unique=False)

    with op.batch_alter_table('scim_resource', schema=None) as batch_op:
        batch_op.add_column(sa.Column('version', sa.Integer(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('unique_key', sa.String(), nullable=True))
        batch_op.add_column(sa.Column('external_key', sa.String(), nullable=True))
        batch_op.add_column(sa.Column('display', sa.String(), nullable=True))

    _fill_keys()

    with op.batch_alter_table('scim_resource', schema=None) as batch_op:
        batch_op.create_index('ix_scim_resource_external_key', ['tenant', 'resource_type', 'external_key'],
                              unique=False)
        batch_op.create_index('ux_scim_resource_unique_key', ['source', 'resource_type', 'unique_key'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('scim_resource', schema=None) as batch_op:
        batch_op.drop_index('ux_scim_resource_unique_key')
        batch_op.drop_index('ix_scim_resource_external_key')
        batch_op.drop_column('display')
        batch_op.drop_column('external_key')
        batch_op.drop_column('unique_key')
        batch_op.drop_column('version')

    with op.batch_alter_table('scim_member', schema=None) as batch_op:
        batch_op.drop_index('ix_scim_member_user')

    op.drop_table('scim_member')
