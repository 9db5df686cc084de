"""Caches: Redis when `VITTE_REDIS_URL` is set, else in-process. Same contract (`Cache`)."""

from __future__ import annotations

from vitte.cache.base import Cache, CachedMessage, LockHold, Prefetch
from vitte.cache.memory import MemoryCache
from vitte.cache.redis import RedisCache
from vitte.config import Settings

__all__ = ["Cache", "CachedMessage", "LockHold", "MemoryCache", "Prefetch", "RedisCache", "make_cache"]


def make_cache(settings: Settings) -> Cache:
    """RedisCache when `settings.redis_url` is set, else MemoryCache (cap = recent_messages)."""
    if settings.redis_url:
        return RedisCache.from_settings(settings)
    return MemoryCache.from_settings(settings)
