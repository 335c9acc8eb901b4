"""A rule of the layout that import-linter cannot check: all SQL lives in `harness/store/`.

Import-linter keeps DuckDB itself inside the store; this keeps the SQL there too. Outside
`harness/store/` no module (the harness's, the built-in plugins' or report views') holds
a SQL statement in a string, nor calls a method that runs SQL or opens a connection
(`.execute(`, `.sql(`, `.query(`, `.scalar(`, ...): the other stages call named store
functions (`harness.store.clusters.load_clusters`, `Queries.run_rows`, ...) instead.
Docstrings and comments may show SQL (the help of `harness sql` does).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STORE = ROOT / "harness" / "store"
SOURCES = sorted(
    path
    for folder in ("harness", "plugins", "reports")
    for path in (ROOT / folder).rglob("*.py")
    if STORE not in path.parents
)

SQL_STATEMENT = re.compile(
    r"^\s*SELECT\b"
    r"|\bSELECT\b[\s\S]*\bFROM\b"
    r"|\bINSERT\s+(OR\s+\w+\s+)?INTO\b"
    r"|\bUPDATE\s+\w+\s+SET\b"
    r"|\bDELETE\s+FROM\b"
    r"|\b(CREATE|DROP)\s+(OR\s+REPLACE\s+)?(TEMP\w*\s+)?(TABLE|VIEW|INDEX|SEQUENCE|MACRO|SCHEMA)\b"
    r"|\bALTER\s+TABLE\b"
    r"|\b(BEGIN\s+TRANSACTION|COMMIT|ROLLBACK)\b\s*$"
)
"""A SQL statement (the store writes its keywords in capitals)."""

SQL_CALLS = frozenset({"execute", "executemany", "sql", "query", "query_arrow", "scalar", "connect", "transaction", "sandbox"})
"""Methods that run SQL or open a connection: DuckDB's, and the `Store`'s own."""


def _documentation(tree: ast.AST) -> set[int]:
    """ids of the string constants that document: docstrings and bare string statements."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    }


def _string_parts(node: ast.AST) -> str | None:
    """The text of a string literal (an f-string's literal parts joined by a space)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return " ".join(
            part.value for part in node.values if isinstance(part, ast.Constant) and isinstance(part.value, str)
        )
    return None


def sql_in(path: Path) -> list[str]:
    """`line N: ...` for every SQL statement and SQL-running call in one file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    documentation = _documentation(tree)
    inside_fstring = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_CALLS:
            found.append(f"line {node.lineno}: calls .{node.func.attr}(")
            continue
        if id(node) in documentation or id(node) in inside_fstring:
            continue
        text = _string_parts(node)
        if text is not None and SQL_STATEMENT.search(text):
            first = text.strip().splitlines()[0] if text.strip() else text
            found.append(f"line {node.lineno}: SQL {first[:60]!r}")
    return sorted(found, key=lambda entry: int(entry.split()[1].rstrip(":")))


def test_the_scan_reads_every_module_outside_the_store() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in SOURCES}
    assert len(SOURCES) > 100
    # the stages, the CLI, the viewer, a built-in plugin and a report view are all read
    for expected in (
        "harness/cluster/clustering.py",
        "harness/data/datasets.py",
        "harness/cli/eval_commands.py",
        "harness/view/app.py",
        "plugins/metrics.py",
        "reports/run.py",
    ):
        assert expected in names
    assert not any(name.startswith("harness/store/") for name in names)


@pytest.mark.parametrize("name", ["loops.py", "clusters.py", "runs.py", "core.py"])
def test_the_scan_finds_the_sql_of_the_store(name: str) -> None:
    found = sql_in(STORE / name)
    assert any(": SQL " in entry for entry in found), found
    assert any("calls ." in entry for entry in found), found


def test_the_scan_catches_sql_and_leaves_documentation_alone(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text(
        '"""Run `harness sql "SELECT run_id FROM runs"` to look."""\n'
        "def rows(store, con, run, table):\n"
        '    """SELECT * FROM runs, in a docstring, documents."""\n'
        "    # SELECT in a comment documents too\n"
        '    message = "select a run, then insert it into the report"\n'
        '    store.query("SELECT * FROM runs WHERE run_id = ?", [run])\n'
        '    con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run])\n'
        '    sql = (\n'
        '        "UPDATE runs SET status = ? "\n'
        '        "WHERE run_id = ?"\n'
        "    )\n"
        "    return store.transaction()\n"
    )
    assert sql_in(module) == [
        "line 6: calls .query(",
        "line 6: SQL 'SELECT * FROM runs WHERE run_id = ?'",
        "line 7: calls .execute(",
        "line 7: SQL 'DELETE FROM   WHERE run_id = ?'",
        "line 9: SQL 'UPDATE runs SET status = ? WHERE run_id = ?'",
        "line 12: calls .transaction(",
    ]
    bare = tmp_path / "bare.py"
    bare.write_text('QUERY = "SELECT count(*) FROM issues"\nOTHER = f"INSERT INTO {1} VALUES (1)"\n')
    assert sql_in(bare) == [
        "line 1: SQL 'SELECT count(*) FROM issues'",
        "line 2: SQL 'INSERT INTO   VALUES (1)'",
    ]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_sql_lives_only_in_the_store(path: Path) -> None:
    assert sql_in(path) == [], f"{path.relative_to(ROOT)} holds SQL: move it into a harness/store/ module"
