"""``PoolStore`` on Redis, beside the ``RedisStore``: the same connection and key prefix.

Keys (``{p}`` is the store's hash-tagged prefix):

=========================  ===============================================================
``{p}:pools:<kind>``       hash key -> JSON, one per kind: ``pool``, ``group``, ``rule``,
                           ``card`` (statuses), ``assignment`` (by zero-padded serial),
                           ``cursor`` (rule -> card key)
``{p}:pools:duty``         the pool scheduler's duty: the holding core's id, with an expiry
=========================  ===============================================================

``update_card_status`` is an optimistic transaction (WATCH / MULTI, retried on conflict);
the duty is taken and renewed by one script (SET NX PX, or PEXPIRE by its holder).
"""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from remsim_control.pool_store import DocumentPoolStore
from remsim_control.redis_store import RedisStore, _unavailable_on_failure

__all__ = ["RedisPoolStore"]

# KEYS: duty; ARGV: owner, ttl (ms). 1 if owner holds the duty now.
_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: duty; ARGV: owner.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


class RedisPoolStore(DocumentPoolStore):
    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        """``prefix``: the hash-tagged key prefix, as ``{remsim}``."""
        super().__init__()
        self._redis = redis
        self._k = f"{prefix}:pools:"
        self._k_duty = f"{prefix}:pools:duty"
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)

    @classmethod
    def beside(cls, store: RedisStore) -> RedisPoolStore:
        """On ``store``'s connection, under its prefix."""
        prefix = store._k_serial.removesuffix(":serial")
        return cls(store._redis, prefix)

    async def _put(self, kind: str, key: str, data: str) -> None:
        with _unavailable_on_failure():
            await self._redis.hset(self._k + kind, key, data)

    async def _get(self, kind: str, key: str) -> str | None:
        with _unavailable_on_failure():
            data = await self._redis.hget(self._k + kind, key)
        return None if data is None else str(data)

    async def _all(self, kind: str) -> dict[str, str]:
        with _unavailable_on_failure():
            rows = await self._redis.hgetall(self._k + kind)
        return {str(key): str(value) for key, value in rows.items()}

    async def _delete(self, kind: str, key: str) -> bool:
        with _unavailable_on_failure():
            return bool(await self._redis.hdel(self._k + kind, key))

    async def _update(self, kind: str, key: str, change: Callable[[str | None], str]) -> str:
        name = self._k + kind
        with _unavailable_on_failure():
            async with self._redis.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(name)
                        old = await pipe.hget(name, key)
                        data = change(None if old is None else str(old))
                        pipe.multi()  # type: ignore[no-untyped-call]
                        pipe.hset(name, key, data)
                        await pipe.execute()
                        return data
                    except WatchError:
                        continue

    async def claim_duty(self, owner: str, ttl: float) -> bool:
        with _unavailable_on_failure():
            return bool(
                await self._claim(keys=[self._k_duty], args=[owner, max(1, int(ttl * 1000))])
            )

    async def release_duty(self, owner: str) -> None:
        with _unavailable_on_failure():
            await self._release(keys=[self._k_duty], args=[owner])
