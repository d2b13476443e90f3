"""Per-caller API call counts in fixed windows, kept in the database with an atomic increment.

Django's file cache (the default cache) reads, adds one and writes back, so concurrent
requests lost hits and a burst got past the limit. Here one statement both increments and
returns the count (UPDATE ... SET count = count + 1 ... RETURNING, on SQLite and PostgreSQL
alike), and a window's first hit is an INSERT that a racing request loses with an
IntegrityError, after which it increments the row the winner made.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone as dt_timezone

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.db import IntegrityError, connection, transaction

from approvals.models import RateWindow


def window_start(now: datetime, seconds: int) -> datetime:
    """The start of the fixed window of `seconds` that `now` falls in (windows align to the epoch)."""
    stamp = int(now.timestamp()) // seconds * seconds
    return datetime.fromtimestamp(stamp, tz=dt_timezone.utc)


def window_end(start: datetime, seconds: int) -> datetime:
    return start + timedelta(seconds=seconds)


def hit(key: str, start: datetime, seconds: int = 3600) -> int:
    """Count one call of `key` in the window starting at `start`; returns the count including this call.

    On a Redis cache the count is Redis's atomic INCR (no SQL statement on the request's path);
    otherwise a row in the database, because the file cache's incr reads and writes back.
    """
    if _redis_cache():
        return _cache_hit(key, start, seconds)
    count = _increment(key, start)
    if count is not None:
        return count
    try:
        with transaction.atomic():
            RateWindow.objects.create(key=key, window_start=start, count=1)
    except IntegrityError:  # a concurrent first call made the row: count on it
        return _increment(key, start) or 1
    RateWindow.objects.filter(key=key, window_start__lt=start).delete()  # older windows are done with
    return 1


def _increment(key: str, start: datetime) -> int | None:
    quote = connection.ops.quote_name
    table, count, key_column, start_column = (
        quote(RateWindow._meta.db_table), quote("count"), quote("key"), quote("window_start"),
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {count} = {count} + 1 WHERE {key_column} = %s AND {start_column} = %s RETURNING {count}",
            [key, connection.ops.adapt_datetimefield_value(start)],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def _redis_cache() -> RedisCache | None:
    backend = caches["default"]
    return backend if isinstance(backend, RedisCache) else None


def _cache_hit(key: str, start: datetime, seconds: int) -> int:
    """Redis INCR on the window's own key (one round trip), which expires a little after the window."""
    backend = _redis_cache()
    name = backend.make_and_validate_key(f"rate:{key}:{int(start.timestamp())}")
    client = backend._cache.get_client(name, write=True)
    count = client.incr(name)
    if count == 1:
        client.expire(name, seconds + 60)
    return count


def current(key: str, start: datetime) -> int:
    """The calls of `key` counted so far in the window starting at `start`."""
    if backend := _redis_cache():
        name = backend.make_and_validate_key(f"rate:{key}:{int(start.timestamp())}")
        return int(backend._cache.get_client(name).get(name) or 0)
    row = RateWindow.objects.filter(key=key, window_start=start).values_list("count", flat=True).first()
    return row or 0
