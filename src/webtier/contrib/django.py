"""A Django session engine over any webtier store: ``SESSION_ENGINE = "webtier.contrib.django"``.

Settings (all optional)::

    WEBTIER_SESSION_STORE = "sqlite:///.webtier/sessions.db"   # unset: webtier up's --store, else this
    WEBTIER_SESSION_STORE_OPTIONS = {}                          # keywords for webtier.open_store
    WEBTIER_SESSION_ENCRYPTION_KEYS = []                        # base64 AES keys: seal values at rest
    WEBTIER_SESSION_USER_KEY = "_auth_user_id"                  # field that binds a session to a user

How Django's sessions map onto the store:

* **Keys.** Django makes and checks its own session keys (32 characters of
  ``[a-z0-9]``) and sets its own cookie (``SESSION_COOKIE_*`` settings). The store never
  sees a key: it keys the session by the key's SHA-256, as it does webtier's own ids.
* **Cookie flags are Django's.** ``HttpOnly`` and ``SameSite=Lax`` are Django's defaults
  too, but ``SESSION_COOKIE_SECURE`` defaults to ``False``: set it to ``True`` when serving
  https (``manage.py check --deploy`` warns while it is not, ``security.W010``-``W012``).
* **Fields.** Each key of Django's session dict (``_auth_user_id``, ``_session_expiry``,
  your own) is one field of the stored session, encoded on its own with webtier's codec:
  JSON, like Django's default ``JSONSerializer``, optionally AES-GCM sealed.
  ``SESSION_SERIALIZER`` is not used, and pickle never is. A save writes only the fields
  whose JSON changed since the session was loaded and deletes only the removed ones, so
  concurrent requests that change different keys of one session all persist.
* **Expiry.** Each save sets the store's deadline to now + ``get_expiry_age()``, so
  ``set_expiry()`` and ``SESSION_COOKIE_AGE`` behave as with Django's backends, and the
  store drops expired sessions itself (``clearsessions`` purges any that remain).
* **Users.** The session is bound to the user in ``_auth_user_id`` (webtier's
  ``user_id``), so ``store.sessions_of(user)`` and ``store.revoke_user(user)`` (log a
  user out everywhere) work for Django sessions too.
* **Log-out is final.** Saving a session that was deleted meanwhile raises
  ``UpdateError`` (Django answers ``SessionInterrupted``), and ``cycle_key()`` swaps
  the key in one atomic write.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

try:
    from django.conf import settings  # type: ignore[import-untyped]
    from django.contrib.sessions.backends.base import (  # type: ignore[import-untyped]
        VALID_KEY_CHARS,
        CreateError,
        SessionBase,
        UpdateError,
    )
    from django.utils.crypto import get_random_string  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - depends on the environment
    from webtier.exceptions import MissingDependency

    raise MissingDependency("django", "webtier.contrib.django") from exc

from webtier.config import WorkerSettings
from webtier.exceptions import SessionDecodeError, SessionEncodeError, StoreError
from webtier.sessions.codec import Codec
from webtier.sessions.ids import hash_session_id
from webtier.sessions.sync import SyncStore
from webtier.stores import Store
from webtier.stores.base import SessionRecord, Write

__all__ = ["SessionStore"]

security_log = logging.getLogger("django.security.SuspiciousSession")

# Django's keys, and webtier's ids (so a Django app can read sessions other webtier apps issued).
_KEY = re.compile(r"[A-Za-z0-9_-]{8,64}")
_KEY_LENGTH = 32
_CREATE_ATTEMPTS = 10
_UNREADABLE = b""  # stands for a stored field that cannot be decoded: never equal to any JSON


@functools.cache
def _backend(url: str, options: tuple[tuple[str, Any], ...], keys: tuple[str | bytes, ...]) -> tuple[SyncStore, Codec]:
    """One store (and codec) per process and configuration, shared by every request."""
    return SyncStore(url, store_options=dict(options)), Codec(keys)


def _configured() -> tuple[SyncStore, Codec]:
    options: Mapping[str, Any] = getattr(settings, "WEBTIER_SESSION_STORE_OPTIONS", {})
    return _backend(
        getattr(settings, "WEBTIER_SESSION_STORE", None) or WorkerSettings.from_env().store,
        tuple(sorted(options.items())),
        tuple(getattr(settings, "WEBTIER_SESSION_ENCRYPTION_KEYS", ())),
    )


async def _save(store: Store, key: str, write: Write) -> bool:
    """Apply ``write``; a create finds the key free first (one trip, but not atomic: see ``create``)."""
    if write.create and await store.load(key, write.now) is not None:
        return False
    return await store.save(key, write)


class SessionStore(SessionBase):  # type: ignore[misc]
    """Django's ``SessionBase`` over a webtier store, chosen by ``settings.WEBTIER_SESSION_STORE``."""

    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        self._sync, self._codec = _configured()
        self._stored: dict[str, bytes] = {}  # the JSON of each field as loaded or last saved
        self._stored_user: str | None = None
        self._created: float | None = None
        self._cleared = False
        self._replaces: str | None = None  # the store key cycle_key() retires

    def _validate_session_key(self, key: object) -> bool:
        return isinstance(key, str) and _KEY.fullmatch(key) is not None

    @staticmethod
    def _store_key(session_key: str | None) -> str | None:
        if session_key is None or _KEY.fullmatch(session_key) is None:
            return None
        return hash_session_id(session_key)

    # -- loading ---------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        key = self._store_key(self.session_key)
        return self._adopt(key, self._sync.load(key, time.time()) if key else None)

    async def aload(self) -> dict[str, Any]:
        key = self._store_key(self.session_key)
        now = time.time()
        return self._adopt(key, await self._sync.acall(lambda s: s.load(key, now)) if key else None)

    def _adopt(self, key: str | None, record: SessionRecord | None) -> dict[str, Any]:
        self._stored, self._stored_user, self._created, self._cleared = {}, None, None, False
        if key is None or record is None:  # unknown or expired: a new key is made on save
            self._session_key = None
            return {}
        data = {}
        for name, raw in record.data.items():
            try:
                data[name] = self._codec.decode(key, name, raw)
            except SessionDecodeError as exc:
                security_log.warning("Session data corrupted: %s", exc)
                self._stored[name] = _UNREADABLE  # removed from the store at the next save
                continue
            self._stored[name] = self._codec.dumps(name, data[name])
        self._stored_user, self._created = record.user, record.created
        return data

    def exists(self, session_key: str | None) -> bool:
        key = self._store_key(session_key)
        return key is not None and self._sync.load(key, time.time()) is not None

    async def aexists(self, session_key: str | None) -> bool:
        key = self._store_key(session_key)
        now = time.time()
        return key is not None and await self._sync.acall(lambda s: s.load(key, now)) is not None

    # -- saving ----------------------------------------------------------------------------

    def create(self) -> None:
        # The key is checked free in the same trip as the write. Keys have 165 random bits,
        # so two creates racing for one key do not happen; a taken key just draws again.
        for _ in range(_CREATE_ATTEMPTS):
            self._session_key = get_random_string(_KEY_LENGTH, VALID_KEY_CHARS)
            try:
                self.save(must_create=True)
            except CreateError:
                continue
            self.modified = True
            return
        raise StoreError("the session store reports every new session key as taken")

    async def acreate(self) -> None:
        for _ in range(_CREATE_ATTEMPTS):
            self._session_key = get_random_string(_KEY_LENGTH, VALID_KEY_CHARS)
            try:
                await self.asave(must_create=True)
            except CreateError:
                continue
            self.modified = True
            return
        raise StoreError("the session store reports every new session key as taken")

    def save(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return self.create()
        data = self._get_session(no_load=must_create)
        key, write = self._write(data, must_create)
        self._saved(data, write, self._sync.call(lambda s: _save(s, key, write)))
        return None

    async def asave(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return await self.acreate()
        data = await self._aget_session(no_load=must_create)
        key, write = self._write(data, must_create)
        self._saved(data, write, await self._sync.acall(lambda s: _save(s, key, write)))
        return None

    def _write(self, data: dict[str, Any], must_create: bool) -> tuple[str, Write]:
        """What to store: every field when creating, else only the fields changed since loading."""
        key = self._store_key(self.session_key)
        if key is None:  # loading found the session gone: logged out (or expired) meanwhile
            raise UpdateError
        for name in data:
            if not isinstance(name, str):
                raise SessionEncodeError(f"session keys must be str, not {type(name).__name__}")
        now = time.time()
        expires = now + self.get_expiry_age()
        user = self._user_of(data)
        if must_create or self._cleared:
            changed = list(data)
        else:
            changed = [n for n, v in data.items() if self._stored.get(n) != self._codec.dumps(n, v)]
        return key, Write(
            now=now,
            expires=expires,
            created=now if must_create else (self._created or now),
            set={name: self._codec.encode(key, name, data[name]) for name in changed},
            delete=() if must_create else tuple(n for n in self._stored if n not in data),
            clear=self._cleared and not must_create,
            create=must_create,
            replaces=self._replaces if must_create else None,
            set_user=user is not None if must_create else (self._cleared or user != self._stored_user),
            user=user,
        )

    def _saved(self, data: dict[str, Any], write: Write, done: bool) -> None:
        if not done:
            if write.create:
                raise CreateError
            raise UpdateError  # the session was deleted meanwhile: a log-out is never undone
        self._stored = {name: self._codec.dumps(name, value) for name, value in data.items()}
        self._stored_user, self._cleared, self._replaces = write.user, False, None
        if write.create:
            self._created = write.created

    def _user_of(self, data: Mapping[str, Any]) -> str | None:
        field = getattr(settings, "WEBTIER_SESSION_USER_KEY", "_auth_user_id")
        user = data.get(field) if field else None
        return None if user is None else str(user)

    # -- clearing, key rotation, deletion ------------------------------------------------------

    def clear(self) -> None:
        super().clear()
        self._cleared = True

    def cycle_key(self) -> None:
        """A new key for the same data, written and the old key deleted in one atomic store write."""
        data = self._session
        self._replaces = self._store_key(self.session_key)
        self.create()
        self._session_cache = data

    async def acycle_key(self) -> None:
        data = await self._aget_session()
        self._replaces = self._store_key(self.session_key)
        await self.acreate()
        self._session_cache = data

    def delete(self, session_key: str | None = None) -> None:
        key = self._deleted_key(session_key)
        if key is not None:
            self._sync.delete(key)

    async def adelete(self, session_key: str | None = None) -> None:
        key = self._deleted_key(session_key)
        if key is not None:
            await self._sync.acall(lambda s: s.delete(key))

    def _deleted_key(self, session_key: str | None) -> str | None:
        return self._store_key(self.session_key if session_key is None else session_key)

    @classmethod
    def clear_expired(cls) -> None:
        store, _ = _configured()
        store.purge_expired(time.time())

    @classmethod
    async def aclear_expired(cls) -> None:
        store, _ = _configured()
        now = time.time()
        await store.acall(lambda s: s.purge_expired(now))
