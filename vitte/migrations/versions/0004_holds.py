"""holds: what is kept after a player deletes their data (a block, today's reply count)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 09:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import vitte.models

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # a new table only (additive); no foreign key: the player's row is gone while a hold exists
    op.create_table('holds',
    sa.Column('user_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('blocked_at', vitte.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('blocked_reason', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('usage_day', sa.Date(), nullable=True),
    sa.Column('usage_replies', sa.Integer(), server_default='0', nullable=False),
    sa.Column('deleted_at', vitte.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('user_id')
    )


def downgrade() -> None:
    op.drop_table('holds')
