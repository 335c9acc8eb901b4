"""The DuckDB file every result lives in: connections, the writer lock, migrations.

One writer process at a time holds `<store>.lock` (an OS lock, released if the process
dies) for as long as it writes; a second writer is refused with a message that names
the holder. Connections are opened per batch rather than for the whole run, so that
`harness runs` or `harness show` can read while a long evaluation is going on.
"""

from __future__ import annotations

import fcntl
import importlib.resources
import json
import os
import re
import socket
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import duckdb
import pyarrow as pa

from harness.errors import (
    ConfigError,
    HarnessError,
    NotFoundError,
    StoreDamagedError,
    StoreLockedError,
    StorePermissionError,
)

DEFAULT_STORE = Path(".harness") / "harness.duckdb"
ENV_STORE = "HARNESS_STORE"
_LOCK_RETRY_S = 15.0

SANDBOX_CONFIG: dict[str, Any] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "lock_configuration": True,
}
"""DuckDB settings of the connection that runs user-typed SQL (`Store.sandbox`)."""


def default_store_path() -> Path:
    return Path(os.environ.get(ENV_STORE) or DEFAULT_STORE)


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration, in order."""
    root = importlib.resources.files("harness.store") / "migrations"
    found = []
    for entry in root.iterdir():
        match = re.match(r"^(\d{4})_(\w+)\.sql$", entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..n without gaps, found {versions}")
    return found


def schema_version() -> int:
    return len(migrations())


class Store:
    """A DuckDB store file. Use `Store.writer(path)` to write, `Store.reader(path)` to read."""

    def __init__(self, path: Path, *, read_only: bool):
        self.path = Path(path)
        self.read_only = read_only
        self._lock_handle: IO[str] | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._depth = 0
        self._prepared = read_only
        self.lock_wait_s = 0.0
        """Seconds this store has waited for other processes to let go of the file."""
        self.longest_lock_wait_s = 0.0

    # -- opening --------------------------------------------------------------

    @classmethod
    def writer(cls, path: str | Path | None = None) -> Store:
        """Open for writing: take the writer lock and bring the schema up to date."""
        store = cls(Path(path) if path else default_store_path(), read_only=False)
        if store.path.exists():
            store._prepare_for_writing()
        # A new store is created on first use, so that a command refused for a bad
        # argument leaves no empty store (nor its folder) behind.
        return store

    @classmethod
    def reader(cls, path: str | Path | None = None) -> Store:
        """Open read-only; works while another process is writing a run."""
        store = cls(Path(path) if path else default_store_path(), read_only=True)
        if not store.path.exists():
            raise NotFoundError(
                f"no store at {store.path}: run `harness eval` first, or point --store "
                f"(or ${ENV_STORE}) at an existing store"
            )
        with store.connect() as con:
            version = _current_version(con)
        if version != schema_version():
            newer = version > schema_version()
            raise HarnessError(
                f"store {store.path} has schema version {version}, this harness uses "
                f"{schema_version()}: "
                + ("it was written by a newer harness; upgrade the harness" if newer
                   else "run any writing command (e.g. `harness eval`) once to upgrade it")
            )
        return store

    def _prepare_for_writing(self) -> None:
        """Create the folder, take the writer lock, bring the schema up to date."""
        _check_writable(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._acquire_writer_lock()
        except PermissionError:
            raise StorePermissionError(_unwritable(self.path.parent)) from None
        self._prepared = True
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the writer lock ------------------------------------------------------

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def _acquire_writer_lock(self) -> None:
        handle = open(self.lock_path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _describe_holder(handle.read())
            handle.close()
            raise StoreLockedError(
                f"store {self.path} is being written by {holder}; wait for it to finish, "
                f"or write to another store with --store (or ${ENV_STORE})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "command": _command_name(),
                    "since": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            )
        )
        handle.flush()
        self._lock_handle = handle

    # -- connections ----------------------------------------------------------

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for the duration of the block (re-entrant).

        DuckDB allows one read-write process or several readers on a file; both sides
        hold the file only briefly, so a conflict is retried for a few seconds."""
        if not self._prepared:
            self._prepare_for_writing()
        if self._con is not None:
            self._depth += 1
            try:
                yield self._con
            finally:
                self._depth -= 1
            return
        self._con = self._open()
        try:
            yield self._con
        finally:
            self._con.close()
            self._con = None

    def _open(self, config: Mapping[str, Any] | None = None) -> duckdb.DuckDBPyConnection:
        """A new DuckDB connection; another process's hold on the file is waited out briefly.

        Readers may share the file, so a stream of them could keep a writer out until it
        gives up. A writer that has to wait therefore raises a flag (`<store>.waiting`)
        and readers hold back while it is up: the writer waits for the queries already
        running, not for every one that follows."""
        started = time.monotonic()
        deadline = started + _LOCK_RETRY_S
        if self.read_only:
            _yield_to_waiting_writer(self.waiting_path, deadline)
        delay = 0.02
        flagged = False
        try:
            while True:
                try:
                    con = duckdb.connect(str(self.path), read_only=self.read_only, config=dict(config or {}))
                    waited = time.monotonic() - started
                    self.lock_wait_s += waited
                    self.longest_lock_wait_s = max(self.longest_lock_wait_s, waited)
                    return con
                except duckdb.IOException as exc:
                    if not _is_lock_conflict(exc):
                        raise _explain_open_error(self.path, exc) from None
                    if time.monotonic() > deadline:
                        raise StoreLockedError(_explain_duckdb_lock(self.path, exc)) from None
                    if not self.read_only and not flagged:
                        flagged = _raise_flag(self.waiting_path)
                    time.sleep(delay)
                    # A writer polls often, so that it gets in as soon as the queries
                    # before it end; readers back off further.
                    delay = min(delay * 2, 0.5 if self.read_only else 0.02)
        finally:
            if flagged:
                self.waiting_path.unlink(missing_ok=True)

    @property
    def waiting_path(self) -> Path:
        return self.path.with_name(self.path.name + ".waiting")

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection inside BEGIN/COMMIT; rolled back if the block raises."""
        if self.read_only:
            raise RuntimeError("read-only store")
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts."""
        with self.connect() as con:
            cursor = con.execute(sql, params) if params is not None else con.execute(sql)
            columns = [d[0] for d in cursor.description or ()]
            return [dict(zip(columns, row)) for row in cursor.fetchall()]

    def query_arrow(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pa.Table:
        with self.connect() as con:
            relation = con.sql(sql, params=params) if params is not None else con.sql(sql)
            return fetch_arrow(relation)

    @contextmanager
    def sandbox(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for SQL the user typed: read-only, no file system, settings locked.

        DuckDB itself enforces it (`enable_external_access=false` refuses COPY TO,
        ATTACH, EXPORT, INSTALL/LOAD and every file-reading or file-writing table
        function; `lock_configuration=true` refuses `SET` back), so no parsing of ours
        stands between a query and the store file."""
        if not self.read_only:
            raise RuntimeError("the SQL sandbox opens only a store opened read-only")
        if self._con is not None:
            raise RuntimeError("close the store's connection before opening the SQL sandbox")
        con = self._open(config=SANDBOX_CONFIG)
        try:
            yield con
        finally:
            con.close()

    def scalar(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> Any:
        with self.connect() as con:
            # fetchall, not fetchone: a half-read result blocks the next query on a shared
            # connection in DuckDB 2.
            rows = (con.execute(sql, params) if params is not None else con.execute(sql)).fetchall()
            return rows[0][0] if rows else None

    # -- migrations -----------------------------------------------------------

    def _migrate(self) -> None:
        with self.connect() as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
            )
            current = _current_version(con)
            known = migrations()
            if current > len(known):
                raise HarnessError(
                    f"store {self.path} has schema version {current}, newer than this harness "
                    f"knows ({len(known)}); upgrade the harness"
                )
            for version, name, sql in known[current:]:
                con.execute("BEGIN TRANSACTION")
                try:
                    con.execute(sql)
                    con.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?, now())", [version, name]
                    )
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                con.execute("COMMIT")


def insert(
    con: duckdb.DuckDBPyConnection,
    table: str,
    rows: pa.Table | Mapping[str, Sequence[Any]],
    *,
    ignore_conflicts: bool = False,
) -> int:
    """Bulk-insert columns (by name) through Arrow; never row by row."""
    data = rows if isinstance(rows, pa.Table) else pa.table(dict(rows))
    if data.num_rows == 0:
        return 0
    name = f"_incoming_{table}"
    con.register(name, data)
    try:
        verb = "INSERT OR IGNORE" if ignore_conflicts else "INSERT"
        con.execute(f"{verb} INTO {table} BY NAME SELECT * FROM {name}")
    finally:
        con.unregister(name)
    return data.num_rows


def fetch_arrow(relation: duckdb.DuckDBPyRelation) -> pa.Table:
    """A relation as an Arrow table (DuckDB 2 renamed `arrow()` to `to_arrow_table()`)."""
    fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
    return fetch()


def _current_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
    ).fetchone()
    if not exists or not exists[0]:
        return 0
    row = con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


def _command_name() -> str:
    """What the lock file says is writing: the command's name, never its arguments
    (they may hold a key typed on the command line)."""
    import click

    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        return ctx.command_path
    return Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"


def _describe_holder(raw: str) -> str:
    try:
        info = json.loads(raw)
        return (
            f"PID {info['pid']} on {info['host']} (`{info['command']}`, since {info['since']})"
        )
    except (ValueError, KeyError, TypeError):
        return "another process"


def _raise_flag(path: Path) -> bool:
    """Tell readers a writer is waiting for the file; False when the folder refuses it."""
    try:
        path.write_text(json.dumps({"pid": os.getpid(), "since": time.time()}), encoding="utf-8")
        return True
    except OSError:
        return False


def _yield_to_waiting_writer(flag: Path, deadline: float) -> None:
    """Wait while a live writer's flag is up (a flag whose process died, or that is older
    than a writer ever waits, is ignored)."""
    while time.monotonic() < deadline:
        try:
            info = json.loads(flag.read_text(encoding="utf-8"))
            pid, since = int(info["pid"]), float(info["since"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        if time.time() - since > _LOCK_RETRY_S or not _alive(pid):
            return
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_writable(path: Path) -> None:
    """Tell a store that cannot be written from one that is locked, before touching it."""
    if path.is_dir():
        raise ConfigError(f"store {path} is a directory; give a file path with --store (or ${ENV_STORE})")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise StorePermissionError(
                f"store {path} is read-only (file permissions); make it writable "
                f"(chmod u+w {path}) or write to another store with --store"
            )
        if not os.access(path.parent, os.W_OK):  # the lock file and DuckDB's WAL live beside it
            raise StorePermissionError(_unwritable(path.parent))
        return
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"store {path}: {ancestor} is a file, not a folder; give another --store")
    if not os.access(ancestor, os.W_OK):
        raise StorePermissionError(_unwritable(ancestor))


def _unwritable(folder: Path) -> str:
    return (
        f"cannot write in {folder} (permission denied): the store, its lock file and its "
        "journal need a writable folder; choose another with --store (or "
        f"${ENV_STORE})"
    )


_DAMAGED = ("not a valid duckdb database", "could not read enough bytes", "corrupt", "checksum")


def _is_lock_conflict(exc: Exception) -> bool:
    return "could not set lock" in str(exc).lower() or "conflicting lock" in str(exc).lower()


def _explain_open_error(path: Path, exc: Exception) -> HarnessError | Exception:
    """One line for a store DuckDB cannot open; an error we do not recognise stays a bug."""
    text = str(exc)
    first = (text.strip().splitlines() or [type(exc).__name__])[0]
    lowered = text.lower()
    if "permission denied" in lowered:
        return StorePermissionError(
            f"store {path} cannot be opened (permission denied); fix its permissions or use "
            "another store with --store"
        )
    if any(marker in lowered for marker in _DAMAGED):
        return StoreDamagedError(
            f"store {path} is damaged or not a DuckDB file ({first.removeprefix('IO Error: ')}); "
            "restore it from a copy, or move it away and use another store with --store"
        )
    return exc


def _explain_duckdb_lock(path: Path, exc: Exception) -> str:
    match = re.search(r"PID (\d+)", str(exc))
    holder = "another process"
    if match:
        pid = match.group(1)
        holder = f"PID {pid}"
        try:  # the program's name only: its arguments may hold secrets
            name = Path(f"/proc/{pid}/comm").read_text(encoding="utf-8", errors="replace").strip()
            holder += f" (`{name}`)"
        except OSError:
            pass
    return (
        f"store {path} is locked by {holder}, which has it open for writing; "
        "close that program or use another store with --store"
    )


def utcnow() -> datetime:
    """Now, in UTC, without tzinfo: the store keeps TIMESTAMP columns in UTC."""
    return datetime.now(UTC).replace(tzinfo=None)
