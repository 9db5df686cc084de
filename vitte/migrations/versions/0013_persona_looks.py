"""persona_looks: a persona's appearance for photos, derived once by the LLM from its card

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 12:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import vitte.models

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # additive: a new table
    op.create_table('persona_looks',
    sa.Column('persona_id', sa.String(length=64), nullable=False),
    sa.Column('card_hash', sa.String(length=64), nullable=False),
    sa.Column('appearance', sa.Text(), nullable=False),
    sa.Column('created_at', vitte.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['persona_id'], ['personas.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('persona_id')
    )


def downgrade() -> None:
    op.drop_table('persona_looks')
