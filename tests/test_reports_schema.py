"""docs/schema.md documents every table and column the migrations create, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from harness.store import Store

SCHEMA_DOC = Path(__file__).resolve().parents[1] / "docs" / "schema.md"


def _documented() -> dict[str, set[str]]:
    text = SCHEMA_DOC.read_text(encoding="utf-8")
    tables: dict[str, set[str]] = {}
    for block in re.split(r"^### ", text, flags=re.MULTILINE)[1:]:
        name = re.match(r"`(\w+)`", block)
        assert name, (
            f"a table heading in {SCHEMA_DOC.name} is not `name`: {block.splitlines()[0]!r}"
        )
        tables[name.group(1)] = set(re.findall(r"^\| `(\w+)` \|", block, flags=re.MULTILINE))
    return tables


def test_every_table_and_column_is_documented(tmp_path: Path) -> None:
    with Store.writer(tmp_path / "s.duckdb") as store:
        rows = store.query(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main'"
        )
    actual: dict[str, set[str]] = {}
    for row in rows:
        actual.setdefault(row["table_name"], set()).add(row["column_name"])
    documented = _documented()
    assert sorted(set(actual) - set(documented)) == [], "tables missing from docs/schema.md"
    assert sorted(set(documented) - set(actual)) == [], (
        "docs/schema.md documents tables that do not exist"
    )
    for table, columns in actual.items():
        assert documented[table] == columns, f"docs/schema.md, table {table}: columns differ"
