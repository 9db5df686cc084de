"""portraits: a card's picture stored per size; personas.card_key (card identity), personas.portrait

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 11:25:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # additive: a new table and two nullable columns
    op.create_table('portraits',
    sa.Column('persona_id', sa.String(length=64), nullable=False),
    sa.Column('size', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('media_type', sa.String(length=32), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['persona_id'], ['personas.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('persona_id', 'size')
    )
    with op.batch_alter_table('personas') as batch:
        batch.add_column(sa.Column('card_key', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('portrait', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('personas') as batch:
        batch.drop_column('portrait')
        batch.drop_column('card_key')
    op.drop_table('portraits')
