"""media: messages.media_kind / media_seconds / media_ref (voice notes heard, voice and photos sent)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 11:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # additive: three nullable columns (NULL: a typed text message, as every row before)
    with op.batch_alter_table('messages') as batch:
        batch.add_column(sa.Column('media_kind', sa.String(length=16), nullable=True))
        batch.add_column(sa.Column('media_seconds', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('media_ref', sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('messages') as batch:
        batch.drop_column('media_ref')
        batch.drop_column('media_seconds')
        batch.drop_column('media_kind')
