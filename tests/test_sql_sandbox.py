"""`harness sql` is a sandbox: it reads the store and nothing else, whatever the query says."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from harness.cli.main import main
from harness.errors import ConfigError
from harness.store import Store
from harness.store.queries import Queries


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "s.duckdb"
    with Store.writer(path) as store, store.transaction() as con:
        con.execute("CREATE TABLE canary (a INTEGER)")
        con.execute("INSERT INTO canary VALUES (1), (2)")
    return path


def _tables(path: Path) -> set[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    finally:
        con.close()


ESCAPES = [
    "COPY canary TO '{out}'",
    "COPY (SELECT 1) TO '{out}' (FORMAT csv)",
    "EXPORT DATABASE '{dir}'",
    "ATTACH '{store}' AS w (READ_WRITE)",
    "ATTACH '{other}' AS w",
    "DETACH s",
    "SET enable_external_access = true",
    "RESET enable_external_access",
    "SET lock_configuration = false",
    "INSTALL httpfs",
    "LOAD httpfs",
    "DROP TABLE canary",
    "DELETE FROM canary",
    "CREATE TABLE evil AS SELECT 1",
    "SELECT 1; DROP TABLE canary",
    "SELECT 1; ATTACH '{store}' AS w (READ_WRITE); DETACH w; ATTACH '{store}' AS w2 (READ_WRITE)",
    "SELECT * FROM read_csv('{passwd}')",
    "SELECT * FROM read_text('{passwd}')",
    "SELECT * FROM glob('{dir}/*')",
    "SELECT * FROM read_parquet('{out}')",
]


@pytest.mark.parametrize("template", ESCAPES)
def test_escapes_are_refused_and_change_nothing(store_path: Path, tmp_path: Path, template: str) -> None:
    other = tmp_path / "other.duckdb"
    query = template.format(
        out=tmp_path / "out.csv", dir=tmp_path / "export", store=store_path, other=other,
        passwd="/etc/passwd",
    )
    before = sorted(p.name for p in tmp_path.iterdir())
    with Store.reader(store_path) as store, pytest.raises(ConfigError, match="^SQL error: "):
        Queries(store).sql(query)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no file written
    assert "canary" in _tables(store_path) and "evil" not in _tables(store_path)
    with Store.reader(store_path) as store:
        assert Queries(store).sql("SELECT count(*) AS n FROM canary").to_pylist() == [{"n": 2}]


RAW_ESCAPES = [
    "COPY canary TO '{out}'",
    "ATTACH '{other}' AS w",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "SELECT * FROM read_csv('{passwd}')",
    "LOAD httpfs",
]


@pytest.mark.parametrize("template", RAW_ESCAPES)
def test_the_sandbox_connection_itself_refuses_them(store_path: Path, tmp_path: Path, template: str) -> None:
    """DuckDB's own settings hold even where the statement check is bypassed."""
    query = template.format(out=tmp_path / "out.csv", other=tmp_path / "o.duckdb", passwd="/etc/passwd")
    with Store.reader(store_path) as store, store.sandbox() as con:
        with pytest.raises(duckdb.Error):
            con.execute(query)
        assert con.execute("SELECT current_setting('enable_external_access')").fetchone() == (False,)
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "o.duckdb").exists()


def test_reading_queries_still_work(store_path: Path) -> None:
    with Store.reader(store_path) as store:
        q = Queries(store)
        assert q.sql("SELECT a FROM canary ORDER BY a").to_pylist() == [{"a": 1}, {"a": 2}]
        assert "canary" in q.sql("SHOW TABLES").column("name").to_pylist()
        assert q.sql("DESCRIBE canary").num_rows == 1
        assert q.sql("PRAGMA table_info('canary')").num_rows == 1
        assert q.sql("SUMMARIZE canary").num_rows == 1


def test_cli_refuses_copy_in_one_line_and_writes_nothing(store_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "leak.csv"
    result = CliRunner().invoke(
        main, ["--store", str(store_path), "--no-autoload", "sql", f"COPY canary TO '{out}'"]
    )
    assert result.exit_code == 2, result.output
    assert "COPY statements are refused" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()
