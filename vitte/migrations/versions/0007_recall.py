"""recall: PostgreSQL full-text indexes of messages (russian, english) and message_vectors

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 11:50:00.000000

The GIN indexes are built for the existing messages by CREATE INDEX (PostgreSQL only). SQLite's
FTS5 index of stemmed text is derived data kept outside Alembic (vitte.recall builds it, and
`vitte memory reindex` rebuilds it).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CONFIGS = ('russian', 'english')


def upgrade() -> None:
    op.create_table('message_vectors',
    sa.Column('message_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('dialog_id', sa.BigInteger(), nullable=False),
    sa.Column('model', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('vector', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['dialog_id'], ['dialogs.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('message_id')
    )
    op.create_index('ix_message_vectors_dialog_id', 'message_vectors', ['dialog_id', 'message_id'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        for config in CONFIGS:
            op.create_index(
                f'ix_messages_search_{config}', 'messages',
                [sa.text(f"to_tsvector('{config}'::regconfig, text)")], unique=False, postgresql_using='gin',
                # no pending list: a search never scans unmerged entries, an insert never flushes them
                postgresql_with={'fastupdate': 'off'},
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        for config in CONFIGS:
            op.drop_index(f'ix_messages_search_{config}', table_name='messages')
    op.drop_index('ix_message_vectors_dialog_id', table_name='message_vectors')
    op.drop_table('message_vectors')
