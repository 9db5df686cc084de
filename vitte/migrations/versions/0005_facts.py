"""facts: what the persona knows about the player in a dialog; dialogs.facts_upto/facts_version

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 11:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import vitte.models

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # additive: a new table and two columns with server defaults
    op.create_table('facts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('dialog_id', sa.BigInteger(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('importance', sa.Integer(), nullable=False),
    sa.Column('sources', sa.JSON(), nullable=False),
    sa.Column('origin', sa.String(length=16), nullable=False),
    sa.Column('superseded_by', sa.BigInteger(), nullable=True),
    sa.Column('created_at', vitte.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', vitte.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['dialog_id'], ['dialogs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_facts_dialog_id_id', 'facts', ['dialog_id', 'id'], unique=False)
    op.create_index(op.f('ix_facts_user_id'), 'facts', ['user_id'], unique=False)
    with op.batch_alter_table('dialogs') as batch:
        batch.add_column(sa.Column('facts_upto', sa.BigInteger(), server_default='0', nullable=False))
        batch.add_column(sa.Column('facts_version', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('dialogs') as batch:
        batch.drop_column('facts_version')
        batch.drop_column('facts_upto')
    op.drop_index(op.f('ix_facts_user_id'), table_name='facts')
    op.drop_index('ix_facts_dialog_id_id', table_name='facts')
    op.drop_table('facts')
