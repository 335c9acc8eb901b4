"""The DuckDB store: migrations, bulk writes, one writer at a time, readers alongside."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from harness.errors import HarnessError, NotFoundError, StoreLockedError
from harness.store import Store, insert
from harness.store.core import migrations, schema_version


def test_migrations_are_numbered_and_applied_once(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with Store.writer(path) as store:
        versions = [r["version"] for r in store.query("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == list(range(1, schema_version() + 1))
    assert [v for v, _, _ in migrations()] == versions
    with Store.writer(path) as store:  # reopening applies nothing twice
        assert store.scalar("SELECT count(*) FROM schema_migrations") == schema_version()


def test_a_store_from_a_newer_harness_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with Store.writer(path) as store:
        store.scalar("SELECT 1")  # a new store is created on first use
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_migrations VALUES (999, 'future', now())")
    con.close()
    with pytest.raises(HarnessError, match="newer"):
        Store.writer(path)
    with pytest.raises(HarnessError, match="newer harness"):
        Store.reader(path)


def test_reader_of_a_missing_store_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="run `harness eval` first"):
        Store.reader(tmp_path / "missing.duckdb")


def test_bulk_insert_by_column_name(tmp_path: Path) -> None:
    with Store.writer(tmp_path / "s.duckdb") as store:
        with store.transaction() as con:
            con.execute("CREATE TABLE t (a INTEGER, b VARCHAR)")
            assert insert(con, "t", {"b": ["x", "y"], "a": [1, 2]}) == 2
            assert insert(con, "t", pa.table({"a": [3], "b": ["z"]})) == 1
            assert insert(con, "t", {"a": [], "b": []}) == 0
        assert store.query("SELECT a, b FROM t ORDER BY a") == [
            {"a": 1, "b": "x"},
            {"a": 2, "b": "y"},
            {"a": 3, "b": "z"},
        ]


def test_a_failed_transaction_writes_nothing(tmp_path: Path) -> None:
    with Store.writer(tmp_path / "s.duckdb") as store:
        with store.transaction() as con:
            con.execute("CREATE TABLE t (a INTEGER)")
        with pytest.raises(RuntimeError):
            with store.transaction() as con:
                insert(con, "t", {"a": [1, 2, 3]})
                raise RuntimeError("half way")
        assert store.scalar("SELECT count(*) FROM t") == 0


HOLDER = textwrap.dedent(
    """
    import sys, time
    from harness.store import Store
    store = Store.writer(sys.argv[1])
    store.scalar("SELECT 1")  # a new store is created (and locked) on first use
    print("ready", flush=True)
    time.sleep(30)
    """
)


def test_second_writer_gets_a_message_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLockedError) as info:
            Store.writer(path)
        message = str(info.value)
        assert f"PID {holder.pid}" in message
        assert "is being written by" in message and "--store" in message
        # Readers are not blocked by a writer between its batches.
        with Store.reader(path) as reader:
            assert reader.scalar("SELECT count(*) FROM runs") == 0
    finally:
        holder.kill()
        holder.wait()
    # The OS releases the lock with the process: no stale lock to clean up.
    Store.writer(path).close()


def test_cli_reports_a_held_store_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        suite = Path(__file__).parent / "data" / "echo_suite"
        out = subprocess.run(
            [sys.executable, "-m", "harness", "--store", str(path), "eval", str(suite),
             "--model", "x", "--backend", "mock"],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        )
    finally:
        holder.kill()
        holder.wait()
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert f"is being written by PID {holder.pid}" in out.stderr


def test_connections_are_short_so_readers_interleave(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with Store.writer(path) as writer:
        with writer.transaction() as con:
            con.execute("CREATE TABLE t (a INTEGER)")
        started = time.perf_counter()
        with Store.reader(path) as reader:
            assert reader.scalar("SELECT count(*) FROM t") == 0
        assert time.perf_counter() - started < 5


def test_the_lock_file_names_the_holder_but_never_its_arguments(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    secret = "sk-do-not-keep-me"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), "--api-key", secret], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        lock = json.loads(path.with_name(path.name + ".lock").read_text())
        assert set(lock) == {"pid", "host", "command", "since"} and lock["pid"] == holder.pid
        with pytest.raises(StoreLockedError) as info:
            Store.writer(path)
    finally:
        holder.kill()
        holder.wait()
    assert secret not in json.dumps(lock) and secret not in str(info.value)
    assert f"PID {holder.pid}" in str(info.value)


def test_readers_hold_back_while_a_writer_waits_but_not_for_a_dead_one(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "s.duckdb"
    with Store.writer(path) as store:
        store.scalar("SELECT 1")
    flag = path.with_name(path.name + ".waiting")
    flag.write_text(json.dumps({"pid": os.getpid(), "since": time.time()}))  # a live writer
    threading.Timer(0.5, flag.unlink).start()
    started = time.perf_counter()
    with Store.reader(path) as reader:
        reader.scalar("SELECT 1")
    assert time.perf_counter() - started >= 0.5
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    flag.write_text(json.dumps({"pid": int(gone.stdout), "since": time.time()}))  # its process has ended
    started = time.perf_counter()
    with Store.reader(path) as reader:
        reader.scalar("SELECT 1")
    assert time.perf_counter() - started < 0.5 and flag.exists()
