"""A bounded store of Responses API records (for ``previous_response_id``, ``GET`` and
``DELETE /v1/responses/{id}``), in memory or in an SQLite file that survives restarts.

    from llama_harmony.response_store import ResponseStore

    store = ResponseStore(max_count=1000, max_bytes=64 << 20)          # in memory
    store = ResponseStore(path="responses.db")                         # on disk (WAL)
    store.put("resp_1", {"response": {...}, "messages": [...]})
    store.get("resp_1")       # a fresh copy of the dict (None when unknown); a use, for LRU
    store.delete("resp_1")    # True when it was there
    len(store), store.bytes

Records are JSON-serializable dicts, stored as their compact JSON text; a record's size is
that text's UTF-8 length plus its id's. The store keeps at most ``max_count`` records and
``max_bytes`` bytes: a put that would exceed either evicts the least recently used records
(a ``get`` or ``put`` is a use); a single record larger than ``max_bytes`` is refused with
:class:`RecordTooLarge` and evicts nothing.

Both modes are the same SQLite code: ``path=None`` is a private in-memory database; a path
is a file in WAL mode with ``synchronous=FULL``, so every completed ``put`` / ``delete`` is
on disk before it returns and a new ``ResponseStore(path=...)`` (a restarted process) finds
every record, with its place in the LRU order. The bounds apply to the file too (a store
opened with smaller bounds evicts at once). Thread-safe (one connection behind a lock);
several processes may share a file (each change is one transaction), though the intended use
is one server per file.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from typing import Any, Dict, Optional, Union

__all__ = ["RecordTooLarge", "ResponseStore", "ResponseStoreError"]

_SCHEMA_VERSION = 1
_MAX_ID = 256


class ResponseStoreError(Exception):
    """A bad id or record, an invalid bound, or a file that is not a response store."""


class RecordTooLarge(ResponseStoreError, ValueError):
    """A record larger than the store's ``max_bytes``: ``size`` and ``max_bytes`` say by
    how much."""

    def __init__(self, record_id: str, size: int, max_bytes: int):
        """Set up the RecordTooLarge (the parameters are described in the class docstring)."""
        super().__init__(f"record {record_id!r} is {size} bytes, more than the store's "
                         f"max_bytes={max_bytes}")
        self.size = size
        self.max_bytes = max_bytes


class ResponseStore:
    """The bounded, LRU-evicting store (see the module docstring).

    ``max_count``: records kept at most (>= 1). ``max_bytes``: bytes kept at most (>= 1).
    ``path``: an SQLite file (created if missing) to keep the records across restarts;
    ``None`` keeps them in memory.
    """

    def __init__(self, max_count: int = 1000, max_bytes: int = 64 << 20,
                 path: Union[str, "os.PathLike[str]", None] = None):
        """Set up the ResponseStore (the parameters are described in the class docstring)."""
        for name, value in (("max_count", max_count), ("max_bytes", max_bytes)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ResponseStoreError(f"{name}: must be an int >= 1 (got {value!r})")
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.path = None if path is None else os.fspath(path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path or ":memory:", check_same_thread=False,
                                       isolation_level=None, timeout=30)
            self._open()
        except sqlite3.DatabaseError as exc:
            raise ResponseStoreError(f"{self.path}: not a usable response store ({exc})") from exc

    def _open(self) -> None:
        db = self._db
        if self.path is not None:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version not in (0, _SCHEMA_VERSION) or (version == 0 and tables):
            raise ResponseStoreError(f"{self.path}: not a response store (schema version {version}, "
                                     f"tables {sorted(tables)})")
        with self._transaction():
            db.execute("CREATE TABLE IF NOT EXISTS responses (id TEXT PRIMARY KEY, body TEXT NOT NULL, "
                       "nbytes INTEGER NOT NULL, used INTEGER NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS responses_used ON responses (used)")
            db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            self._evict(keep=None)

    def _transaction(self) -> "_Transaction":
        return _Transaction(self._db)

    # -- API ------------------------------------------------------------------------------

    def put(self, id: str, record: Dict[str, Any]) -> None:
        """Store ``record`` under ``id`` (replacing any record of that id), evicting the least
        recently used records as the bounds require. Raises :class:`RecordTooLarge`, or
        :class:`ResponseStoreError` for an invalid id or a record that is not a
        JSON-serializable dict."""
        _check_id(id)
        if not isinstance(record, dict):
            raise ResponseStoreError(f"record: must be a dict (got {type(record).__name__})")
        try:
            body = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ResponseStoreError(f"record {id!r}: not JSON-serializable ({exc})") from exc
        size = len(body.encode("utf-8")) + len(id.encode("utf-8"))
        if size > self.max_bytes:
            raise RecordTooLarge(id, size, self.max_bytes)
        with self._lock, self._transaction():
            self._db.execute("INSERT OR REPLACE INTO responses (id, body, nbytes, used) VALUES (?, ?, ?, ?)",
                             (id, body, size, self._next_use()))
            self._evict(keep=id)

    def get(self, id: str) -> Optional[Dict[str, Any]]:
        """A fresh copy of the record stored under ``id``, or ``None``. Counts as a use."""
        _check_id(id)
        with self._lock, self._transaction():
            row = self._db.execute("SELECT body FROM responses WHERE id = ?", (id,)).fetchone()
            if row is None:
                return None
            self._db.execute("UPDATE responses SET used = ? WHERE id = ?", (self._next_use(), id))
        return json.loads(row[0])

    def delete(self, id: str) -> bool:
        """Remove the record of ``id``; True when there was one."""
        _check_id(id)
        with self._lock, self._transaction():
            return self._db.execute("DELETE FROM responses WHERE id = ?", (id,)).rowcount > 0

    def __contains__(self, id: object) -> bool:
        """Whether ``id`` is stored (not a use)."""
        if not isinstance(id, str):
            return False
        with self._lock:
            return self._db.execute("SELECT 1 FROM responses WHERE id = ?", (id,)).fetchone() is not None

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM responses").fetchone()[0]

    @property
    def bytes(self) -> int:
        """The bytes the records take (the sum of their sizes, as bounded by ``max_bytes``)."""
        with self._lock:
            return int(self._db.execute("SELECT total(nbytes) FROM responses").fetchone()[0])

    def close(self) -> None:
        """Close the database (the file keeps every record)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> "ResponseStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------

    def _next_use(self) -> int:
        return self._db.execute("SELECT coalesce(max(used), 0) + 1 FROM responses").fetchone()[0]

    def _evict(self, keep: Optional[str]) -> None:
        """Drop the least recently used records (never ``keep``) until within the bounds."""
        db = self._db
        count, total = db.execute("SELECT count(*), total(nbytes) FROM responses").fetchone()
        while count > self.max_count or total > self.max_bytes:
            row = db.execute("SELECT id, nbytes FROM responses WHERE id IS NOT ? ORDER BY used LIMIT 1",
                             (keep,)).fetchone()
            if row is None:
                break
            db.execute("DELETE FROM responses WHERE id = ?", (row[0],))
            count, total = count - 1, total - row[1]


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def _check_id(id: object) -> None:
    if not isinstance(id, str) or not id or len(id) > _MAX_ID:
        raise ResponseStoreError(f"id: must be a non-empty string of at most {_MAX_ID} characters "
                                 f"(got {id!r:.60})")
