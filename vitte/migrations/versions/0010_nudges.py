"""nudges: the persona writes first (issue 18) — the schedule table, messages.kind, users.unreachable_at

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 11:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import vitte.models

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # additive: a new table and two nullable columns (ADD COLUMN, no table rebuild on SQLite)
    op.create_table('nudges',
    sa.Column('dialog_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('due_at', vitte.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('unanswered', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_nudge_at', vitte.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('claim_token', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('lease_until', vitte.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('message_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', vitte.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['dialog_id'], ['dialogs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('dialog_id')
    )
    op.create_index(op.f('ix_nudges_due_at'), 'nudges', ['due_at'], unique=False)
    op.create_index(op.f('ix_nudges_user_id'), 'nudges', ['user_id'], unique=False)
    with op.batch_alter_table('messages') as batch:
        batch.add_column(sa.Column('kind', sa.String(length=16), nullable=True))
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('unreachable_at', vitte.models.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.drop_column('unreachable_at')
    with op.batch_alter_table('messages') as batch:
        batch.drop_column('kind')
    op.drop_index(op.f('ix_nudges_user_id'), table_name='nudges')
    op.drop_index(op.f('ix_nudges_due_at'), table_name='nudges')
    op.drop_table('nudges')
