"""The keyboards the bot sends: the [🔄] fast path builds the very markup aiogram would."""

from __future__ import annotations

import pytest
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from vitte.bot.callbacks import RegenCb
from vitte.bot.keyboards import REGEN_LABEL, regen_kb


def _validated(dialog_id: int, message_id: int) -> InlineKeyboardMarkup:
    # what regen_kb built before: three validated models
    data = RegenCb(dialog_id=dialog_id, message_id=message_id).pack()
    return InlineKeyboardMarkup(inline_keyboard=[[InlineKeyboardButton(text=REGEN_LABEL, callback_data=data)]])


@pytest.mark.parametrize("ids", [(1, 2), (0, 0), (123456789, 987654321), (-5, 7), (2**62, 2**62 + 1)])
def test_regen_kb_is_the_validated_markup(ids: tuple[int, int]) -> None:
    fast, slow = regen_kb(*ids), _validated(*ids)
    assert fast == slow
    assert fast.model_dump() == slow.model_dump()
    assert fast.model_dump(exclude_unset=True) == slow.model_dump(exclude_unset=True)
    assert fast.model_dump_json(exclude_none=True) == slow.model_dump_json(exclude_none=True)
    button, expected = fast.inline_keyboard[0][0], slow.inline_keyboard[0][0]
    assert button.model_fields_set == expected.model_fields_set
    assert fast.model_fields_set == slow.model_fields_set
    assert button.bot is None and fast.bot is None
    assert RegenCb.unpack(button.callback_data or "") == RegenCb(dialog_id=ids[0], message_id=ids[1])


def test_regen_kb_copies_share_nothing_mutable() -> None:
    first, second = regen_kb(1, 2), regen_kb(3, 4)
    assert first.inline_keyboard is not second.inline_keyboard
    assert first.inline_keyboard[0][0] is not second.inline_keyboard[0][0]
    assert first.inline_keyboard[0][0].callback_data == RegenCb(dialog_id=1, message_id=2).pack()
    assert regen_kb(1, 2) == first  # building more leaves earlier ones as they were
