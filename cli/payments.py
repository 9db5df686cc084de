"""`vitte payments …`: list Stars payments, refund one.

Registered in cli/main.py as ``app.add_typer(payments_app, name="payments")``.
Exit codes: 0 ok, 1 not found / refused (unknown charge, already refunded, Telegram said no),
2 bad usage or configuration (no VITTE_BOT_TOKEN for a refund).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import typer

from cli.common import (
    JSON_OPTION,
    USER_OPTION,
    fail,
    iso,
    opened_core,
    plain,
    print_json,
    run_async,
    settings_or_exit,
    settings_with_token,
    shown,
)

if TYPE_CHECKING:
    from vitte.models import Payment

payments_app = typer.Typer(help="Telegram Stars payments: list, refund.", no_args_is_help=True)


def payment_json(p: Payment) -> dict[str, Any]:
    return {
        "id": p.id,
        "charge_id": p.telegram_payment_charge_id,
        "user_id": p.user_id,
        "plan": p.plan,
        "amount": p.amount,
        "currency": p.currency,
        "is_recurring": p.is_recurring,
        "is_first_recurring": p.is_first_recurring,
        "extra_replies": p.extra_replies,
        "expires_at": iso(p.expires_at),
        "refunded_at": iso(p.refunded_at),
        "created_at": iso(p.created_at),
    }


@payments_app.command("list")
def payments_list(
    user: USER_OPTION = None,
    limit: int = typer.Option(100, "--limit", min=1, max=100_000, help="At most this many rows."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List payments, newest first."""
    settings = settings_or_exit()

    async def go() -> list[dict[str, Any]]:
        async with opened_core(settings) as core:
            user_id = await core.players.resolve(user) if user is not None else None
            return [payment_json(p) for p in await core.billing.list_payments(user_id, limit)]

    rows = run_async(go)
    if as_json:
        print_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    if not rows:
        Console().print("No payments.")
        return
    table = Table(title="Payments")
    for col in ("charge id", "user", "plan", "amount", "recurring", "expires", "refunded", "paid at"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            shown(r["charge_id"]),
            str(r["user_id"] if r["user_id"] is not None else "(deleted)"),
            shown(r["plan"] or "?"),
            f"{r['amount']} {r['currency']}",
            ("first" if r["is_first_recurring"] else "yes") if r["is_recurring"] else "",
            (r["expires_at"] or "")[:16],
            (r["refunded_at"] or "")[:16],
            (r["created_at"] or "")[:16],
        )
    Console().print(table)


@payments_app.command("refund")
def payments_refund(
    charge_id: str = typer.Argument(..., help="telegram_payment_charge_id (see `vitte payments list`)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Refund a payment in Stars (refundStarPayment) and end what it paid for."""
    settings = settings_with_token()

    async def look() -> Payment:
        from vitte.errors import PaymentAlreadyRefunded

        async with opened_core(settings) as core:
            payment = await core.billing.payment(charge_id)
            if payment.refunded_at is not None:
                raise PaymentAlreadyRefunded(charge_id, payment.refunded_at)
            return payment

    payment = run_async(look)
    if not yes:
        if not sys.stdin.isatty():
            fail("refusing to refund without confirmation: pass --yes", 1)
        what = plain(f"{payment.amount} {payment.currency} to user {payment.user_id} ({payment.plan or '?'})")
        if not typer.confirm(f"Refund {what}? What it paid for ends now", default=False):
            fail("not refunded", 1)

    async def go() -> Any:
        from vitte.telegram.bot import make_bot
        from vitte.telegram.payments import refund

        async with opened_core(settings) as core:
            bot = make_bot(settings)
            try:
                return await refund(core.billing, bot, charge_id)
            finally:
                await bot.session.close()

    result = run_async(go)
    if as_json:
        print_json(
            {
                "payment": payment_json(result.payment),
                "premium_ended": result.premium_ended,
                "replies_removed": result.replies_removed,
            }
        )
        return
    p = result.payment
    ended = []
    if result.premium_ended:
        ended.append("premium ended")
    if result.replies_removed:
        ended.append(f"{result.replies_removed} pack replies removed")
    tail = f"; {', '.join(ended)}" if ended else ""
    typer.echo(plain(f"refunded {p.amount} {p.currency} to user {p.user_id} (charge {p.telegram_payment_charge_id}){tail}"))
