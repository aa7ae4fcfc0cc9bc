"""API keys: created once, stored only as a salted scrypt hash, verified per request.

A secret looks like ``rml_<key_id>_<43 url-safe characters>`` (32 random bytes). The key id in
it lets verification fetch one row by primary key instead of hashing against every stored key;
the id is not secret, the random part is.

Hashing: scrypt (n=2**14, r=8, p=1, 16 MiB, tens of milliseconds) with a per-key 16-byte salt,
compared with ``hmac.compare_digest``. The random part alone has 256 bits of entropy, so a slow
KDF is defence in depth (a leaked table gives nothing to brute-force either way); the cost is
paid once per secret per process: a verified secret is remembered in memory by its SHA-256 for
CACHE_SECONDS, together with the stored hash it matched. Each request still reads the key's row
(one primary-key lookup, well under a millisecond on SQLite), so a revoked or replaced key stops
working at once in every worker, not when the cache expires; the cache only skips scrypt.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session

from serving.schemas import Role
from serving.store import ApiKey, Store, utcnow

__all__ = ["Caller", "Role", "clear_cache", "create_key", "list_keys", "revoke", "verify"]

PREFIX: Final = "rml"


@dataclass(frozen=True)
class Caller:
    """Who a verified request comes from: the key's id and role (never its secret)."""

    key_id: str
    role: Role


CACHE_SECONDS: Final = 300.0
MAX_SECRET_CHARS: Final = 128  # longer input is rejected before any hashing

SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
_DKLEN: Final = 32
_SECRET_RE: Final = re.compile(rf"^{PREFIX}_([0-9a-f]{{16}})_([A-Za-z0-9_-]{{43}})$")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        secret.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=2 * 128 * r * n, dklen=_DKLEN
    )


def hash_secret(secret: str) -> str:
    """The stored form: ``scrypt$n$r$p$salt$digest`` (salt and digest url-safe base64)."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(secret, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def check_secret(secret: str, stored: str) -> bool:
    """True when `secret` matches the stored hash (constant-time comparison of the digests)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = _scrypt(secret, _unb64(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


class _VerifiedCache:
    """SHA-256(secret) -> (key_id, stored hash, expiry): secrets whose scrypt already passed."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[bytes, tuple[str, str, float]] = {}

    def hit(self, digest: bytes, key_id: str, stored: str) -> bool:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return False
            if entry[2] < now:
                del self._entries[digest]
                return False
        return entry[0] == key_id and hmac.compare_digest(entry[1], stored)

    def add(self, digest: bytes, key_id: str, stored: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._entries) > 10_000:  # drop expired entries now and then
                self._entries = {d: e for d, e in self._entries.items() if e[2] >= now}
            self._entries[digest] = (key_id, stored, now + self.ttl)

    def forget(self, key_id: str) -> None:
        with self._lock:
            self._entries = {d: e for d, e in self._entries.items() if e[0] != key_id}

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_cache = _VerifiedCache(CACHE_SECONDS)


def create_key(store: Store, role: Role | str) -> tuple[str, str]:
    """Create a key with this role; returns (key_id, secret). Show the secret once: only its
    hash is stored. Raises ValueError for an unknown role."""
    try:
        role = Role(role)
    except ValueError:
        raise ValueError(f"role must be one of {', '.join(r.value for r in Role)}") from None
    key_id = secrets.token_hex(8)
    secret = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    with Session(store.engine) as session, session.begin():
        session.add(
            ApiKey(key_id=key_id, role=role.value, hash=hash_secret(secret), created_at=utcnow())
        )
    return key_id, secret


@functools.cache
def _key_lookup() -> Select[tuple[str, str, datetime | None]]:
    """SELECT hash, role, revoked_at of one key_id (the :key_id parameter), built once: building
    it per request cost as much as running it."""
    table = ApiKey.__table__
    return select(table.c.hash, table.c.role, table.c.revoked_at).where(
        table.c.key_id == bindparam("key_id")
    )


def verify(store: Store, secret: str | None) -> tuple[str, Role] | None:
    """(key_id, role) for a valid, unrevoked key; None for anything else (malformed, unknown,
    wrong secret, revoked)."""
    if not secret or len(secret) > MAX_SECRET_CHARS:
        return None
    match = _SECRET_RE.match(secret)
    if match is None:
        return None
    key_id = match.group(1)
    row = store.select_one(_key_lookup(), {"key_id": key_id})  # one primary-key lookup
    if row is None:
        return None
    stored, role, revoked_at = row
    if revoked_at is not None:
        return None
    digest = hashlib.sha256(secret.encode("utf-8")).digest()
    if not _cache.hit(digest, key_id, stored):
        if not check_secret(secret, stored):
            return None
        _cache.add(digest, key_id, stored)
    try:
        return key_id, Role(role)
    except ValueError:
        return None


def revoke(store: Store, key_id: str) -> bool:
    """Revoke a key (kept for the audit trail); False when there is no such active key."""
    with Session(store.engine) as session, session.begin():
        row = session.get(ApiKey, key_id)
        if row is None or row.revoked_at is not None:
            return False
        row.revoked_at = utcnow()
    _cache.forget(key_id)
    return True


def list_keys(store: Store) -> list[dict[str, object]]:
    """Key ids, roles and dates (never hashes), oldest first."""
    with Session(store.engine) as session:
        rows = session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.key_id)).all()
        return [
            {
                "key_id": r.key_id,
                "role": r.role,
                "created_at": r.created_at,
                "revoked_at": r.revoked_at,
            }
            for r in rows
        ]


def clear_cache() -> None:
    """Forget every verified secret (tests; after a bulk key change)."""
    _cache.clear()
