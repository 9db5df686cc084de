"""extra_photos: photos a player bought for Stars (VITTE_PHOTO_STARS), spent once the day's are used

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 12:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # additive: a column with a server default (ADD COLUMN, no table rebuild on SQLite)
    op.add_column('users', sa.Column('extra_photos', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.drop_column('extra_photos')
