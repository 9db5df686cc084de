"""A loopback TCP proxy in front of PostgreSQL that counts client round trips on the wire.

The ground truth for "SQL round trips per message": every message the client sends is
parsed from the PostgreSQL frontend protocol, and each ``Query`` ('Q', simple protocol:
BEGIN, COMMIT, ROLLBACK …) and each ``Sync`` ('S', the end of an extended-protocol
Parse/Bind/Execute batch) is one round trip: the client waits for ReadyForQuery after it.
A pre-ping, a BEGIN, a COMMIT and a ROLLBACK all count; nothing is estimated.

::

    async with PgWireCounter("127.0.0.1", 5432) as proxy:
        url = proxy.rewrite(database_url)          # same URL, the proxy's port
        ...                                        # run the code under test against `url`
        print(proxy.round_trips, proxy.queries)    # totals since start / last reset()

Only plain (non-TLS) loopback connections are proxied: an SSLRequest is answered 'N' by
PostgreSQL itself (forwarded as is) and the session then continues in clear text.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import Counter

from sqlalchemy.engine import make_url

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102


class _FrontendParser:
    """Incremental parser of the client's side of the protocol."""

    def __init__(self, counter: PgWireCounter) -> None:
        self.counter = counter
        self.buffer = bytearray()
        self.startup = True

    def feed(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        pos = 0
        while True:
            if self.startup:
                if len(buf) - pos < 8:
                    break
                (length,) = struct.unpack_from("!I", buf, pos)
                if len(buf) - pos < length:
                    break
                (code,) = struct.unpack_from("!I", buf, pos + 4)
                pos += length
                if code not in (_SSL_REQUEST, _GSSENC_REQUEST):
                    self.startup = False  # the StartupMessage (or a CancelRequest)
                continue
            if len(buf) - pos < 5:
                break
            kind = buf[pos : pos + 1]
            (length,) = struct.unpack_from("!I", buf, pos + 1)
            if len(buf) - pos < 1 + length:
                break
            if kind in (b"Q", b"S"):
                self.counter.round_trips += 1
                self.counter.kinds[kind.decode()] += 1
                if kind == b"Q":
                    text = bytes(buf[pos + 5 : pos + 1 + length - 1]).decode("utf-8", "replace")
                    self.counter.queries[text.split(None, 1)[0].upper() if text.strip() else ""] += 1
            pos += 1 + length
        del buf[:pos]


class PgWireCounter:
    """A counting proxy: ``round_trips`` (Q + S messages), ``kinds``, ``queries`` (first word
    of each simple query: BEGIN / COMMIT / ROLLBACK / SELECT …), ``connections``."""

    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5432, host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self.port = 0
        self.round_trips = 0
        self.connections = 0
        self.kinds: Counter[str] = Counter()
        self.queries: Counter[str] = Counter()
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @classmethod
    def for_url(cls, database_url: str) -> PgWireCounter:
        u = make_url(database_url)
        return cls(u.host or "127.0.0.1", u.port or 5432)

    def rewrite(self, database_url: str) -> str:
        """`database_url` pointed at this proxy."""
        u = make_url(database_url).set(host=self.host, port=self.port)
        return u.render_as_string(hide_password=False)

    def reset(self) -> None:
        self.round_trips = 0
        self.kinds.clear()
        self.queries.clear()

    async def start(self) -> PgWireCounter:
        self._server = await asyncio.start_server(self._client, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> PgWireCounter:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        parser = _FrontendParser(self)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, parse: bool) -> None:
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    if parse:
                        parser.feed(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        tasks = [
            asyncio.create_task(pump(reader, up_writer, True)),
            asyncio.create_task(pump(up_reader, writer, False)),
        ]
        self._tasks.update(tasks)
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._tasks.difference_update(tasks)
            self._writers.difference_update((writer, up_writer))
