"""`vitte user …`: one player's plan, quota and dialog.

Registered in cli/main.py as ``app.add_typer(user_app, name="user")``.
Exit codes: 0 ok, 1 unknown player, 2 bad usage or configuration.
"""

from __future__ import annotations

from typing import Any

import typer

from cli.common import JSON_OPTION, USER_ARG, iso, opened_core, plain, print_json, run_async, settings_or_exit

user_app = typer.Typer(help="Players: show, block, unblock, export, delete.", no_args_is_help=True)


@user_app.command("show")
def user_show(
    user: str = USER_ARG,
    as_json: bool = JSON_OPTION,
) -> None:
    """Show a player: plan, premium until, subscription, today's quota, dialog status."""
    settings = settings_or_exit()

    async def go() -> dict[str, Any]:
        async with opened_core(settings) as core:
            user_id = await core.players.resolve(user)
            player = await core.players.get(user_id)
            ent = await core.billing.entitlement(user_id)
            view = await core.dialogs.latest(user_id)
            payments = await core.billing.list_payments(user_id, limit=100_000)
            return {
                "user_id": user_id,
                "username": player.username,
                "first_name": player.first_name,
                "language": player.language,
                "created_at": iso(player.created_at),
                "blocked": player.blocked_at is not None,
                "plan": ent.plan_id,
                "is_premium": ent.is_premium,
                "premium_until": iso(ent.premium_until),
                "subscription_state": ent.subscription_state,
                "renews": ent.renews,
                "day": ent.day.isoformat(),
                "daily_limit": ent.daily_limit,
                "used_today": ent.used_today,
                "left_today": ent.left_today,
                "extra_replies": ent.extra_replies,
                "extra_photos": ent.extra_photos,  # bought for Stars, not spent yet (issue 19)
                "extra_voice": ent.extra_voice,
                "payments": len(payments),
                "dialog": (
                    {
                        "id": view.id,
                        "persona": view.persona_name,
                        "story": view.story_title,
                        "status": view.status,
                    }
                    if view is not None
                    else None
                ),
            }

    data = run_async(go)
    if as_json:
        print_json(data)
        return
    name = plain(data["first_name"] or (f"@{data['username']}" if data["username"] else ""))
    lines = [f"user {data['user_id']}" + (f" ({name})" if name else "") + f" · {data['language']}"]
    if data["blocked"]:
        lines.append("blocked")
    if data["is_premium"]:
        renewal = "renews" if data["renews"] else (data["subscription_state"] or "no renewal")
        lines.append(f"plan: premium until {data['premium_until'][:16]} ({renewal})")
    else:
        state = f" (subscription: {data['subscription_state']})" if data["subscription_state"] else ""
        lines.append(f"plan: free{state}")
    lines.append(
        f"today ({data['day']} UTC): {data['used_today']}/{data['daily_limit']} replies used, "
        f"{data['left_today']} left, {data['extra_replies']} pack replies"
    )
    if data["extra_photos"] or data["extra_voice"]:
        lines.append(f"bought, not spent: {data['extra_photos']} photos, {data['extra_voice']} voice replies")
    lines.append(f"payments: {data['payments']}")
    d = data["dialog"]
    if d is None:
        lines.append("dialog: none")
    else:
        story = f" · {d['story']}" if d["story"] else ""
        lines.append(plain(f"dialog {d['id']}: {d['persona']}{story} · {d['status']}"))
    typer.echo("\n".join(lines))
