"""Read-only figures for operators and admins (dialog lists, counters)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlmodel import col

from vitte.models import ACTIVE, Dialog, Message, User

if TYPE_CHECKING:
    from vitte.core import Core


async def list_dialogs(core: Core, *, include_ended: bool = False, limit: int = 50) -> list[dict[str, Any]]:
    counts = (
        select(col(Message.dialog_id), func.count(col(Message.id)).label("n"))
        .group_by(col(Message.dialog_id))
        .subquery()
    )
    query = (
        select(Dialog, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.dialog_id == col(Dialog.id))
        .order_by(col(Dialog.id).desc())
        .limit(limit)
    )
    if not include_ended:
        query = query.where(col(Dialog.status) == ACTIVE)
    async with core.db.session() as s:
        rows = (await s.execute(query)).all()
    out: list[dict[str, Any]] = []
    for dialog, n in rows:
        try:
            persona = await core.catalog.persona(dialog.persona_id)
            persona_name = persona.name
            story = next((st.title for st in persona.stories if st.id == dialog.story_id), None)
        except Exception:
            persona_name, story = dialog.persona_id, dialog.story_id
        out.append(
            {
                "dialog_id": dialog.id,
                "user_id": dialog.user_id,
                "persona_id": dialog.persona_id,
                "persona": persona_name,
                "story_id": dialog.story_id,
                "story": story,
                "status": dialog.status,
                "messages": int(n),
                "created_at": dialog.created_at.isoformat() if dialog.created_at else None,
            }
        )
    return out


async def counters(core: Core) -> dict[str, int]:
    """Players, active dialogs, messages today (UTC), online now; the nudges (issue 18)."""
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    async with core.db.session() as s:
        players = (await s.execute(select(func.count(col(User.id))))).scalar_one()
        active = (await s.execute(select(func.count(col(Dialog.id))).where(col(Dialog.status) == ACTIVE))).scalar_one()
        today = (await s.execute(select(func.count(col(Message.id))).where(col(Message.created_at) >= start))).scalar_one()
    from vitte.initiative.schedule import Schedule

    return {
        "players": int(players),
        "active_dialogs": int(active),
        "messages_today": int(today),
        "online_now": int(await core.cache.online_count()),
        # issue 18: nudges_scheduled, nudges_due, nudges_sent, players_unreachable
        **await Schedule(core.db).counts(datetime.now(UTC)),
    }
