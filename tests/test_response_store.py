"""The Responses API store (llama_harmony.response_store): LRU bounds by count and bytes, in
memory and in SQLite, thread safety, and records surviving restarts of other processes (a
clean exit, an exit without close, a SIGKILL mid-write)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading

import pytest

from llama_harmony.response_store import RecordTooLarge, ResponseStore, ResponseStoreError



def size(id: str, record: dict) -> int:
    return len(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()) + len(id.encode())


def record(n: int, pad: int = 0) -> dict:
    return {"response": {"id": f"resp_{n}", "output": [{"type": "message", "text": "x" * pad}]},
            "messages": [{"role": "user", "content": "é ünïcode"}], "n": n}


@pytest.fixture(params=["memory", "sqlite"])
def make(request, tmp_path):
    def factory(**kw):
        return ResponseStore(path=tmp_path / "store.db" if request.param == "sqlite" else None, **kw)
    return factory


def test_put_get_delete(make):
    store = make()
    store.put("resp_1", record(1))
    assert store.get("resp_1") == record(1) and len(store) == 1 and "resp_1" in store
    assert store.bytes == size("resp_1", record(1))
    copy = store.get("resp_1")
    copy["n"] = 99
    assert store.get("resp_1")["n"] == 1  # callers get copies
    store.put("resp_1", record(2))         # same id: replaced
    assert store.get("resp_1") == record(2) and len(store) == 1
    assert store.get("resp_missing") is None and "resp_missing" not in store and 5 not in store
    assert store.delete("resp_1") is True and store.delete("resp_1") is False
    assert len(store) == 0 and store.bytes == 0


def test_lru_by_count(make):
    store = make(max_count=3)
    for n in (1, 2, 3):
        store.put(f"r{n}", record(n))
    assert store.get("r1") is not None       # r1 used: r2 is now the oldest
    store.put("r4", record(4))
    assert [f"r{n}" in store for n in (1, 2, 3, 4)] == [True, False, True, True]
    store.put("r3", record(33))              # a put is a use too: r1 is the oldest now
    store.put("r5", record(5))
    assert [f"r{n}" in store for n in (1, 3, 4, 5)] == [False, True, True, True]


def test_lru_by_bytes(make):
    one = size("r1", record(1, pad=100))
    store = make(max_bytes=3 * one + 10)
    for n in (1, 2, 3):
        store.put(f"r{n}", record(n, pad=100))
    assert store.bytes == 3 * one
    store.get("r1")
    store.put("r4", record(4, pad=100))
    assert "r2" not in store and len(store) == 3 and store.bytes <= store.max_bytes
    store.put("big", record(5, pad=2 * one))   # needs the room of two or three others
    assert store.bytes <= store.max_bytes and "big" in store and len(store) == 1


def test_a_record_larger_than_the_store_is_refused(make):
    store = make(max_bytes=1000)
    store.put("small", record(1))
    with pytest.raises(RecordTooLarge) as info:
        store.put("huge", record(2, pad=2000))
    assert info.value.max_bytes == 1000 and info.value.size == size("huge", record(2, pad=2000))
    assert "huge" in str(info.value) and "max_bytes=1000" in str(info.value)
    assert "small" in store and "huge" not in store  # nothing evicted for it


@pytest.mark.parametrize("id, rec, message", [
    ("", {}, "id: must be a non-empty string"),
    (5, {}, "id: must be a non-empty string"),
    ("x" * 257, {}, "id: must be a non-empty string of at most 256"),
    ("r", [1, 2], "record: must be a dict (got list)"),
    ("r", {"s": {1, 2}}, "record 'r': not JSON-serializable"),
    ("r", {"f": float("nan")}, "record 'r': not JSON-serializable"),
])
def test_bad_ids_and_records(make, id, rec, message):
    store = make()
    with pytest.raises(ResponseStoreError) as info:
        store.put(id, rec)
    assert str(info.value).startswith(message)
    assert len(store) == 0


def test_bounds_are_validated():
    for kw, field in [({"max_count": 0}, "max_count"), ({"max_bytes": -1}, "max_bytes"),
                      ({"max_count": True}, "max_count"), ({"max_bytes": 1.5}, "max_bytes")]:
        with pytest.raises(ResponseStoreError, match=field):
            ResponseStore(**kw)


def test_threads(make):
    store = make(max_count=50)
    errors = []

    def work(t):
        try:
            for i in range(100):
                store.put(f"t{t}-{i}", record(i))
                got = store.get(f"t{t}-{i // 2}")
                assert got is None or got["n"] == i // 2
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(store) == 50


def _in_subprocess(code: str, **kw) -> subprocess.Popen:
    """``code`` in a new process of this interpreter (it imports the llama_harmony under test)."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], **kw)


def test_records_survive_a_restart(tmp_path):
    db = tmp_path / "responses.db"
    writer = _in_subprocess(f"""
        import json, os
        from llama_harmony.response_store import ResponseStore
        store = ResponseStore(max_count=100, path={str(db)!r})
        for n in range(40):
            store.put(f"resp_{{n}}", {{"n": n, "text": "é" * n}})
        store.get("resp_0")          # resp_1 becomes the least recently used
        store.delete("resp_39")
        os._exit(0)                  # no close(): the file must already hold everything
        """)
    assert writer.wait(timeout=120) == 0
    store = ResponseStore(max_count=100, path=db)
    assert len(store) == 39 and store.get("resp_39") is None
    assert all(store.get(f"resp_{n}") == {"n": n, "text": "é" * n} for n in range(39))
    store.close()
    # Reopened with a smaller bound, the LRU order of the other process still holds.
    store = ResponseStore(max_count=2, path=db)
    assert len(store) == 2 and "resp_38" in store and "resp_37" in store
    store.close()
    # And the other direction: what this process wrote, a new process reads.
    store = ResponseStore(path=db)
    store.put("from_parent", {"ok": True})
    reader = _in_subprocess(f"""
        from llama_harmony.response_store import ResponseStore
        print(ResponseStore(path={str(db)!r}).get("from_parent"))
        """, stdout=subprocess.PIPE, text=True)
    assert reader.communicate(timeout=120)[0] == "{'ok': True}\n"


def test_a_killed_writer_loses_nothing_it_completed(tmp_path):
    db = tmp_path / "responses.db"
    writer = _in_subprocess(f"""
        from llama_harmony.response_store import ResponseStore
        store = ResponseStore(path={str(db)!r})
        n = 0
        while True:
            store.put(f"resp_{{n}}", {{"n": n}})
            print(n, flush=True)     # only after put() returned
            n += 1
        """, stdout=subprocess.PIPE, text=True)
    done = []
    assert writer.stdout is not None
    for line in writer.stdout:
        done.append(int(line))
        if len(done) == 200:
            writer.send_signal(signal.SIGKILL)
            break
    writer.wait(timeout=60)
    store = ResponseStore(path=db)
    assert all(store.get(f"resp_{n}") == {"n": n} for n in done)


def test_the_file_is_wal_and_other_files_are_refused(tmp_path):
    db = tmp_path / "r.db"
    ResponseStore(path=db).close()
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    text = tmp_path / "notes.txt"
    text.write_text("this is not a database at all, just some text that is long enough" * 20)
    with pytest.raises(ResponseStoreError, match="not a usable response store"):
        ResponseStore(path=text)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE accounts (name TEXT)")
    with pytest.raises(ResponseStoreError, match=r"not a response store \(schema version 0, tables \['accounts'\]\)"):
        ResponseStore(path=other)
