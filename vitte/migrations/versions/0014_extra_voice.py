"""extra_voice: voice replies a player bought for Stars (VITTE_VOICE_STARS), spent once the day's are used

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 12:35:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0014'
down_revision: str | None = '0013'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # additive: a column with a server default (ADD COLUMN, no table rebuild on SQLite)
    op.add_column('users', sa.Column('extra_voice', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.drop_column('extra_voice')
