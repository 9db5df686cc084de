"""Test clean-up: the Redis keys a test wrote under its own prefix."""

from __future__ import annotations


async def drop_redis_prefix(url: str, prefix: str) -> None:
    """Delete every key under `prefix` (each test has its own, see conftest `redis_prefix`)."""
    import redis.asyncio as aioredis

    r = aioredis.from_url(url)
    try:
        keys = [k async for k in r.scan_iter(match=prefix + "*")]
        if keys:
            await r.delete(*keys)
    finally:
        await r.aclose()
