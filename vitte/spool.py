"""The spool: a player's message that arrives while the database is away is kept, bounded, and
handled in order when the database returns (issue 14).

Where: in Redis (one list shared by every bot process) when Redis is up; else in a local file
(`VITTE_SPOOL_PATH`, JSON lines, fsynced on every write, so a crash keeps it) with a small
companion file counting the lines already handled. Bounds: `VITTE_SPOOL_MAX_UPDATES` items in
each place, and `VITTE_SPOOL_MAX_AGE` seconds: an older item is given up (its player is asked to
write again) instead of being answered hours late.

The spool keeps updates as Telegram sent them (JSON) and knows nothing of aiogram; the bot
(`vitte.bot.spooling`) decides what to keep and feeds them back through its dispatcher.
Per player, order holds: while a player has kept updates, their next ones are kept behind them.
The process that kept them knows (`holds`); with Redis every process does: a pushed item counts
in its player's hold in Redis (`Cache.spool_push`, one less with `spool_done` once handled),
which the call that takes the player's lock reads at no extra cost (`Turn.spool_held`). While
Redis is away, only the process that kept them knows. And one drainer at a time takes from the
shared list (the one holding its lease, `DRAIN_LEASE`, renewed as it takes): were several
processes to take a player's kept updates at once, they would race for the player's lock and
could answer them out of order. The others take only their own file's items meanwhile, and
take over once the holder stops or dies (its lease runs out).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from vitte.cache.base import Cache, SpoolBusy
from vitte.config import Settings

log = logging.getLogger("vitte.spool")

# seconds the drainers' lease on the shared list outlives its holder's last take or renewal
# (a drainer that died holding it: another takes over after this long)
DRAIN_LEASE = 15.0


class Kept(Enum):
    FIRST = "first"  # kept; the player had nothing kept before (tell them once)
    MORE = "more"  # kept behind earlier ones (they were told already)
    FULL = "full"  # not kept: the spool is full, or could not be written


@dataclass
class Entry:
    """One kept update: when it arrived (epoch seconds), whose it is, the update's JSON."""

    at: float
    user_id: int
    update: dict[str, Any]
    origin: str = "file"  # "file" or "shared" (Redis)
    raw: str = field(default="", repr=False)  # the shared item as stored (to put it back)
    # a shared item the file took back (Redis went away): it still counts in the shared hold
    shared_hold: bool = field(default=False, repr=False)
    line: int = field(default=-1, repr=False, compare=False)  # a file item's line in the file (from 0)

    def dump(self) -> str:
        return json.dumps({"at": self.at, "user": self.user_id, "update": self.update}, separators=(",", ":"))

    @classmethod
    def load(cls, raw: str, origin: str, *, warn: bool = True) -> Entry | None:
        try:
            data = json.loads(raw)
            return cls(float(data["at"]), int(data["user"]), dict(data["update"]), origin, raw)
        except (ValueError, KeyError, TypeError) as exc:
            if warn:
                log.warning("spool: an unreadable item was dropped: %s", exc)
            return None


class _File:
    """The local spool: an append-only JSON-lines file and `<file>.done`, the count of lines
    handled (both fsynced): every line before the first one not handled yet (an unreadable
    line among them too). Emptied (both removed) once everything in it was handled.

    A crash in the middle of an append leaves a last line without its newline: never
    acknowledged (the player is told that their message was kept only after the fsync), it is
    left out when read (unless it is whole: only the newline was missing), and the next append
    starts with a newline, so it does not swallow the line after it. Reading never changes the
    file (`vitte doctor` reads it while the bot may be appending)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done_path = path.with_name(path.name + ".done")
        self.entries: deque[Entry] = deque()
        self.handled = 0  # lines before the first entry not handled (what `<file>.done` says)
        self.lines = 0  # lines in the file, a last one without its newline included
        self.open_tail = False  # the file's last line has no newline (a cut append)
        self.loaded = False

    def load(self) -> None:
        self.entries.clear()
        self.handled = self.lines = 0
        self.open_tail = False
        self.loaded = True
        try:
            # ASCII as written (`Entry.dump`); bytes a disk mangled make an unreadable line
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return
        done = 0
        with contextlib.suppress(FileNotFoundError, ValueError):
            done = max(int(self.done_path.read_text().strip() or 0), 0)
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        else:
            self.open_tail = True
        self.lines = len(lines)
        for i in range(done, len(lines)):
            raw = lines[i]
            if not raw:  # a handled line blanked by `put`
                continue
            cut = self.open_tail and i == len(lines) - 1
            entry = Entry.load(raw, "file", warn=not cut)
            if entry is None:
                if cut:
                    log.warning("spool: a last line cut short by a crash (never acknowledged) was left out")
                continue
            entry.line = i
            self.entries.append(entry)
        self.handled = self.entries[0].line if self.entries else self.lines

    def _drop_stale_count(self) -> None:
        """No file: a count left by a crash between the two removals of `pop_handled` is
        stale (it would make a restart skip a new file's first lines)."""
        if not self.path.exists():
            with contextlib.suppress(FileNotFoundError):
                self.done_path.unlink()
            if not self.entries:
                self.handled = self.lines = 0
                self.open_tail = False

    def append(self, entry: Entry) -> None:
        if not self.loaded:  # kept before the drainer loaded the file: the lines counted first
            self.load()
        self._drop_stale_count()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            size = os.fstat(fd).st_size
            cut = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
            if cut and not self.open_tail:  # left by a write of ours that failed
                self.lines += 1
            data = ("\n" if cut else "") + entry.dump() + "\n"
            _write_all(fd, data.encode())
            os.fsync(fd)
        except OSError:
            self._recount()
            raise
        finally:
            os.close(fd)
        entry.line = self.lines
        self.lines += 1
        self.open_tail = False
        self.entries.append(entry)

    def _recount(self) -> None:
        """After a failed append: the lines as the file has them (part of it may be written)."""
        with contextlib.suppress(OSError):
            data = self.path.read_bytes()
            self.open_tail = bool(data) and not data.endswith(b"\n")
            self.lines = data.count(b"\n") + int(self.open_tail)

    def put(self, entry: Entry, index: int = 0) -> None:
        """Put `entry` among the lines not handled yet, at `index` (0: before every one), on
        disk as in memory (a restart finds it there). The file is rewritten: a temporary file,
        fsynced, renamed over it; the handled lines become empty ones, so `<file>.done` counts
        right for the old file and the new one alike, whichever a crash leaves."""
        if not self.loaded:
            self.load()
        self._drop_stale_count()
        pending = list(self.entries)
        pending.insert(index, entry)
        lines = ["\n"] * self.handled + [e.dump() + "\n" for e in pending]
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, "".join(lines).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        self.entries.insert(index, entry)
        for i, e in enumerate(pending):
            e.line = self.handled + i
        self.lines = self.handled + len(pending)
        self.open_tail = False

    def pop_handled(self) -> None:
        self.entries.popleft()
        if not self.entries:
            for p in (self.path, self.done_path):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            self.handled = self.lines = 0
            self.open_tail = False
            return
        self.handled = self.entries[0].line  # unreadable lines before it count as handled
        tmp = self.done_path.with_name(self.done_path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, str(self.handled).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.done_path)


def _write_all(fd: int, data: bytes) -> None:
    """`os.write` may write part of it (a disk nearly full): the rest, or an OSError."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError("spool: nothing written")
        view = view[n:]


def _user_of(raw: str) -> int | None:
    """The player of an item `Entry.load` could not read, if it says (None: it does not)."""
    try:
        data = json.loads(raw)
        return int(data["user"]) if isinstance(data, dict) else None
    except (ValueError, KeyError, TypeError):
        return None


def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (where the platform allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Updates kept while the database is away. `keep` and `take`/`release` are the calls;
    one drainer per process takes them in order (`vitte.bot.spooling`), and of the shared list,
    one drainer at a time (the lease)."""

    def __init__(
        self, cache: Cache, path: Path, *, max_age: float, max_items: int, lease: float = DRAIN_LEASE
    ) -> None:
        self.cache = cache
        self.max_age = max_age
        self.max_items = max_items
        self.lease = lease  # the drainers' lease on the shared list (seconds)
        self.token = secrets.token_hex(8)  # this spool's drainer, as the lease's holder
        self.leased = False  # it holds the lease (as its last take or renewal found)
        self.shared_elsewhere = False  # the last take found shared items another drainer holds
        self._file = _File(path)
        self._counts: dict[int, int] = {}  # player -> updates kept (known to this process)
        self._told_expired: set[int] = set()
        self._lock = asyncio.Lock()  # file writes, one at a time
        self.wakeup = asyncio.Event()  # set when something is kept
        self._keeping = 0  # keeps in flight
        self._loading = False  # `load` counts what is kept
        self._keeping_idle = asyncio.Condition()

    @classmethod
    def from_settings(cls, settings: Settings, cache: Cache) -> Spool | None:
        """None when the spool is off (`VITTE_SPOOL_MAX_AGE=0`)."""
        if settings.spool_max_age <= 0:
            return None
        return cls(
            cache,
            Path(settings.spool_path),
            max_age=settings.spool_max_age,
            max_items=settings.spool_max_updates,
        )

    # ------------------------------------------------------------------ state
    @property
    def empty(self) -> bool:
        """Nothing kept that this process knows of."""
        return not self._counts

    def holds(self, user_id: int) -> bool:
        """Whether this player has updates kept that this process knows of (their next ones
        queue behind; those kept by another process: `Turn.spool_held`)."""
        return user_id in self._counts

    async def load(self) -> int:
        """At start, before the first `take`: what is kept (the file, the shared list: an
        earlier run's, and what this one kept already); how many. The counts per player are
        those of what was found, not added to the counts of what this process kept since it
        started (those are among it): loading counts each once. Keeps in flight finish first,
        and new ones wait for it (a keep's item found here and counted again by its keep
        would count twice)."""
        async with self._keeping_idle:
            await self._keeping_idle.wait_for(lambda: self._keeping == 0 and not self._loading)
            self._loading = True
        try:
            entries = await self.entries()
            counts: dict[int, int] = {}
            for entry in entries:
                counts[entry.user_id] = counts.get(entry.user_id, 0) + 1
            self._counts = counts
        finally:
            async with self._keeping_idle:
                self._loading = False
                self._keeping_idle.notify_all()
        if entries:
            log.info("spool: %d update(s) kept from before, answered once the database is up", len(entries))
            self.wakeup.set()
        return len(entries)

    async def entries(self) -> list[Entry]:
        """Everything kept (the file's and the shared list's), oldest first, taking nothing."""
        async with self._lock:
            await asyncio.to_thread(self._file.load)
        found = list(self._file.entries)
        for raw in await self.cache.spool_items() or ():
            entry = Entry.load(raw, "shared")
            if entry is not None:
                found.append(entry)
        return sorted(found, key=lambda e: e.at)

    # ------------------------------------------------------------------ keeping
    async def keep(self, user_id: int, update: dict[str, Any], *, at: float | None = None) -> Kept:
        """Keep an update (the shared list when Redis takes it, else the file)."""
        async with self._keeping_idle:  # not while `load` counts (keeps run side by side)
            await self._keeping_idle.wait_for(lambda: not self._loading)
            self._keeping += 1
        try:
            return await self._keep(user_id, update, at)
        finally:
            async with self._keeping_idle:
                self._keeping -= 1
                self._keeping_idle.notify_all()

    async def _keep(self, user_id: int, update: dict[str, Any], at: float | None) -> Kept:
        entry = Entry(time.time() if at is None else at, user_id, update)
        raw = entry.dump()
        pushed = await self.cache.spool_push(raw, self.max_items, user_id, self.max_age)
        if pushed is not None and pushed < 0:
            log.warning("spool full (%d updates): update of player %s not kept", self.max_items, user_id)
            return Kept.FULL
        if pushed is None:
            async with self._lock:
                if not self._file.loaded:  # kept before the drainer loaded the file
                    await asyncio.to_thread(self._file.load)
                if len(self._file.entries) >= self.max_items:
                    log.warning("spool file full (%d updates): update of player %s not kept", self.max_items, user_id)
                    return Kept.FULL
                try:
                    await asyncio.to_thread(self._file.append, entry)
                except OSError as exc:
                    log.error("spool file %s not writable: %s", self._file.path, exc)
                    return Kept.FULL
        before = self._counts.get(user_id, 0)
        self._counts[user_id] = before + 1
        self.wakeup.set()
        return Kept.FIRST if before == 0 else Kept.MORE

    # ------------------------------------------------------------------ draining
    async def take(self) -> Entry | None:
        """The oldest kept update, or None. Hand it back with `release`. From the shared list
        only while this spool's drainer holds its lease (taken or renewed here); else only
        the file's (`shared_elsewhere` then says that shared items wait for another)."""
        while True:
            got = await self.cache.spool_pop(self.token, self.lease)
            self.shared_elsewhere = got is SpoolBusy.LEASED
            shared_raw = got if isinstance(got, str) else None
            self.leased = shared_raw is not None
            shared = Entry.load(shared_raw, "shared") if shared_raw is not None else None
            if shared_raw is None or shared is not None:
                break
            # dropped (logged): it no longer holds its player, when the item says whose it is
            # (else their hold runs out after VITTE_SPOOL_MAX_AGE, as `spool_push` set it)
            user_id = _user_of(shared_raw)
            if user_id is not None:
                await self.cache.spool_done(user_id)
        local = self._file.entries[0] if self._file.entries else None
        if shared is not None and local is not None and local.at < shared.at:
            if not await self.cache.spool_unpop(shared.raw):
                # Redis went away with the shared item in hand: the file keeps it, in arrival
                # order (after `local`, which is older; on disk too)
                try:
                    await self._keep_in_file(shared, in_order=True)
                except OSError as exc:
                    log.error(
                        "spool: Redis went away and the file %s is not writable: update of player %s lost: %s",
                        self._file.path,
                        shared.user_id,
                        exc,
                    )
            return local
        return shared or local

    async def release(self, entry: Entry, *, handled: bool) -> None:
        """`handled`: done with it (answered, or given up); else it goes back to the front."""
        if not handled:
            if entry.origin == "shared" and not await self.cache.spool_unpop(entry.raw):
                # Redis went away with the item in hand: the file keeps it, first (on disk
                # too: a restart takes it before the file's newer items)
                await self._keep_in_file(entry, in_order=False)
            return
        if entry.origin == "file":
            async with self._lock:
                if self._file.entries and self._file.entries[0] is entry:
                    await asyncio.to_thread(self._file.pop_handled)
        if entry.origin == "shared" or entry.shared_hold:
            await self.cache.spool_done(entry.user_id)
        left = self._counts.get(entry.user_id, 0) - 1
        if left > 0:
            self._counts[entry.user_id] = left
        else:
            self._counts.pop(entry.user_id, None)
            self._told_expired.discard(entry.user_id)

    async def _keep_in_file(self, shared: Entry, *, in_order: bool) -> None:
        """A shared item Redis could not take back (it went away) goes into the file, still
        counted in its player's Redis hold (`shared_hold`): first, or (`in_order`) among the
        file's items by the time it was kept, never before the first (in hand). OSError when
        the file cannot be written."""
        kept = Entry(shared.at, shared.user_id, shared.update, shared_hold=True)
        async with self._lock:
            index = 0
            if in_order:
                pending = self._file.entries
                index = next((i for i in range(1, len(pending)) if pending[i].at > kept.at), len(pending))
            await asyncio.to_thread(self._file.put, kept, index)

    async def renew(self) -> None:
        """Keep the lease on the shared list while this spool's drainer holds it (an update in
        hand may take longer than the lease)."""
        if self.leased:
            self.leased = await self.cache.spool_lease(self.token, self.lease)

    async def give_up_lease(self) -> None:
        """The drainer stops: another may take from the shared list at once."""
        self.leased = False
        await self.cache.spool_lease(self.token, 0)

    def settle(self) -> None:
        """Nothing was left to take: forget the counts (another process may have taken what
        this one kept), so no player's messages queue behind updates that are gone. Not while
        shared items wait for the drainer holding the lease (they are not gone)."""
        if not self._file.entries and not self.shared_elsewhere:
            self._counts.clear()
            self._told_expired.clear()

    def told_expired(self, user_id: int) -> bool:
        """Whether this player was already told that a kept message was given up (and, from
        now on, that they were)."""
        if user_id in self._told_expired:
            return True
        self._told_expired.add(user_id)
        return False

    def expired(self, entry: Entry, now: float | None = None) -> bool:
        return (time.time() if now is None else now) - entry.at > self.max_age
