"""Reports end to end: real runs (mock backend) in a temporary store, read back through
the query layer, laid out by the `run` and `compare` views and rendered four ways."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from rich.cells import cell_len
from scipy import stats as scipy_stats

from harness.cli.main import main
from harness.components.contracts import ReportView, detector
from harness.components.hookspecs import hookimpl
from harness.components.plugin_manager import Plugins, load_plugins
from harness.document import Document, Paragraph
from harness.errors import ConfigError, NotFoundError, UnknownComponentError
from harness.report.render import render
from harness.report.show import build_report, show_report
from harness.score.evaluate import EvalOptions, evaluate
from harness.stats import paired_bootstrap
from harness.store import Store, insert
from harness.store.core import utcnow
from harness.store.queries import Queries
from harness.suite.load import load_suite
from harness.testing import MockBackend, mock_backend_plugin, mock_spec
from harness.types import Issue

N = 30
FAST = EvalOptions(resamples=200)
"""Fewer bootstrap resamples for the stored intervals: these tests read them, not judge them."""
BAD_IN_A = {f"s{i}" for i in range(10)}
"""Samples checkpoint A gets wrong."""
FIXED_BY_B = {"s1", "s3", "s5", "s7", "s8", "s9"}
"""The handful of those that checkpoint B gets right (and nothing else changes)."""
SCRIPT = "<script>alert(1)</script>"
LONG_TOKEN = "x" * 130
ODD_OUTPUTS = {
    # Outputs that would break a naive renderer: markup, an escape sequence, an unbroken
    # 130-character token, wide characters, Markdown and rich markup.
    "s0": f"NO IDEA {SCRIPT}",
    "s1": f"NO IDEA, then {SCRIPT} again",
    "s2": f"NO IDEA \x1b[31mred\x1b[0m and {LONG_TOKEN} then more words " * 3,
    "s4": "NO IDEA 漢字の説明はとても長いです 漢字の説明はとても長いです | *bold* [x](http://e)",
    "s6": "NO IDEA [bold red]not markup[/] <img src=x onerror=alert(2)>",
}


@detector("shout")
def shout(item: Any, min_len: int = 3) -> Issue | None:
    """Capital letters in a row: the evidence span is the shouted word."""
    match = re.search(rf"[A-Z]{{{min_len},}}", item.output)
    if match:
        return Issue(
            severity=0.9, message="shouting", start=match.start(), end=match.end(), kind="caps"
        )
    return None


class _ShoutPlugin:
    @staticmethod
    @hookimpl
    def harness_register_detectors(registry: Any) -> None:
        registry.add_detector(shout)


def answer(sample_id: str) -> str:
    return f"the meaning of word {sample_id} is plain"


def responder_for(bad: set[str]) -> Any:
    def respond(prompt: str) -> str:
        sample_id = prompt.split("### Input:\n")[1].split("\n")[0].removeprefix("word ")
        if sample_id in bad:
            return ODD_OUTPUTS.get(sample_id, f"NO IDEA about {sample_id}")
        return answer(sample_id)

    return respond


def write_suite(directory: Path, name: str = "demo", n: int = N) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "suite.yaml").write_text(
        f"""
name: {name}
version: 1
data: data.jsonl
instruction: Define the word.
generation: {{max_new_tokens: 400}}
metrics:
  - name: chrf
    target: 60
    sample_threshold: 50
  - exact_match
  - wer
  - bleu
detectors:
  - name: shout
    threshold: 0.5
""",
        encoding="utf-8",
    )
    rows = [{"id": f"s{i}", "input": f"word s{i}", "reference": answer(f"s{i}")} for i in range(n)]
    (directory / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return directory


def make_plugins(*extra: tuple[object, str]) -> Plugins:
    return load_plugins(
        autoload=False,
        extra=[(mock_backend_plugin, "mock"), (_ShoutPlugin(), "shout-test"), *extra],
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A store with run A (10 wrong answers) and run B (6 of them fixed)."""
    root = tmp_path_factory.mktemp("reports")
    suite = load_suite(write_suite(root / "suite"))
    plugins = make_plugins()
    original = MockBackend.responder
    path = root / "store.duckdb"
    try:
        with Store.writer(path) as store:
            MockBackend.responder = staticmethod(responder_for(BAD_IN_A))
            a = evaluate(suite, mock_spec("ckpt-a"), store, plugins, FAST)
            MockBackend.responder = staticmethod(responder_for(BAD_IN_A - FIXED_BY_B))
            b = evaluate(suite, mock_spec("ckpt-b"), store, plugins, FAST)
    finally:
        MockBackend.responder = original
    yield {"path": path, "a": a.run_id, "b": b.run_id, "plugins": plugins, "root": root}


@pytest.fixture
def reader(demo: dict[str, Any]) -> Iterator[Store]:
    with Store.reader(demo["path"]) as store:
        yield store


def longest_line(text: str) -> int:
    return max(cell_len(line) for line in text.splitlines())


# ---------------------------------------------------------------------------
# The query layer
# ---------------------------------------------------------------------------


def test_run_references_resolve_and_unknown_ones_name_what_exists(reader, demo) -> None:
    q = Queries(reader)
    assert q.resolve("latest") == demo["b"]
    assert q.resolve("latest~1") == demo["a"]
    assert q.resolve(str(demo["a"])) == demo["a"]
    with pytest.raises(NotFoundError, match=r"no run 999 .* newest are 2, 1"):
        q.resolve(999)
    with pytest.raises(NotFoundError, match="has only 2"):
        q.resolve("latest~5")
    with pytest.raises(ConfigError, match="latest~N"):
        q.resolve("yesterday")


def test_queries_return_the_run_in_bulk(reader, demo) -> None:
    q = Queries(reader)
    run = q.run(demo["a"])
    assert (run.suite_name, run.model_path, run.main_metric, run.n_samples) == (
        "demo",
        "ckpt-a",
        "chrf",
        N,
    )
    assert run.generation["max_new_tokens"] == 400 and run.metric_names == [
        "chrf",
        "exact_match",
        "wer",
        "bleu",
    ]
    assert [s.metric for s in q.corpus_scores(demo["a"])] == ["chrf", "exact_match", "wer", "bleu"]

    table = q.samples(demo["a"])
    assert table.num_rows == N and table.column("position").to_pylist() == list(range(N))
    row = table.slice(0, 1).to_pylist()[0]
    assert row["output"] == ODD_OUTPUTS["s0"] and row["references"] == [answer("s0")]
    assert row["scores"]["exact_match"] == 0.0 and row["issues"][0]["detector"] == "shout"
    assert row["reasons"] == ["metric:chrf", "detector:shout"]

    worst = q.worst_samples(demo["a"], limit=5)
    assert {d.sample_id for d in worst} <= BAD_IN_A and len(worst) == 5
    assert q.failing_count(demo["a"]) == len(BAD_IN_A)
    assert q.failure_reasons(demo["a"]) == {"detector:shout": 10, "metric:chrf": 10}
    (summary,) = q.detector_summaries(demo["a"])
    assert (summary.detector, summary.issues, summary.samples, summary.failing) == (
        "shout",
        10,
        10,
        10,
    )
    examples = q.issue_examples(demo["a"], per_detector=2)["shout"]
    assert [e.sample_id for e in examples] == ["s0", "s1"] and examples[0].spans == [
        (3, 7, "shouting")
    ]
    stats = q.sample_stats(demo["a"], "bleu")
    assert stats.stats.shape[0] == N and stats.sample_ids[0] == "s0"
    assert q.clustering(demo["a"]) is None and q.errors(demo["a"]) == []


def test_paired_statistics_are_aligned_by_sample(reader, demo) -> None:
    paired = Queries(reader).paired_stats(demo["a"], demo["b"], "exact_match")
    assert paired.sample_ids == [f"s{i}" for i in range(N)] and (paired.only_a, paired.only_b) == (
        0,
        0,
    )
    changed = {
        s for s, va, vb in zip(paired.sample_ids, paired.values_a, paired.values_b) if va != vb
    }
    assert changed == FIXED_BY_B


def test_ad_hoc_sql_is_read_only(reader, demo) -> None:
    q = Queries(reader)
    assert q.sql("SELECT count(*) AS n FROM samples").to_pylist() == [{"n": 2 * N}]
    with pytest.raises(ConfigError, match="read-only"):
        q.sql("DELETE FROM runs")
    with (
        Store.writer(demo["root"] / "other.duckdb") as writer,
        pytest.raises(Exception, match="read-only"),
    ):
        Queries(writer).sql("SELECT 1")


# ---------------------------------------------------------------------------
# The run report
# ---------------------------------------------------------------------------


def test_run_report_has_every_section_and_fits_80_columns(reader, demo) -> None:
    doc = build_report(reader, "run", plugins=demo["plugins"], run=demo["a"], worst=4)
    text = render(doc, "terminal", width=80)
    assert longest_line(text) <= 80
    for heading in (
        "Run ",
        "Metrics",
        "Failing samples",
        "Issues",
        "shout: most severe",
        "Worst samples by chrf",
    ):
        assert heading in text
    assert "Clusters" not in text and "Plugin errors" not in text  # nothing to show: no section
    assert "ckpt-a" in text and "max_new_tokens=400" in text and "fail" in text
    assert "10 of 30 samples fail (33%)" in text
    assert "NO ⟦IDEA⟧" in text  # evidence bracketed when there is no colour
    assert "\x1b" not in text and "␛[31m" in text  # the output's escape sequence shown, not obeyed
    assert text.count("╭─ sample") == 3 + 4  # 3 detector examples, 4 worst samples


def test_rich_markup_in_an_output_is_printed_as_text(reader, demo) -> None:
    doc = build_report(reader, "run", plugins=demo["plugins"], run=demo["a"], worst=10, examples=0)
    text = render(doc, "terminal", width=200)
    assert "[bold red]not markup[/]" in text


def test_run_report_in_markdown_and_json(reader, demo) -> None:
    doc = build_report(reader, "run", plugins=demo["plugins"], run=demo["a"], worst=10)
    markdown = render(doc, "markdown")
    assert markdown.startswith(f"# Run {demo['a']} · demo v1")
    assert "## Metrics" in markdown and "| metric | value |" in markdown
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markdown and SCRIPT not in markdown
    assert "\\*bold\\*" in markdown and "\\| " in markdown  # Markdown in outputs is inert
    assert "NO **IDEA**" in markdown  # the evidence span

    data = json.loads(render(doc, "json"))
    assert data["report"] == "run" and data["run"]["run_id"] == demo["a"]
    assert {m["metric"] for m in data["metrics"]} == {"chrf", "exact_match", "wer", "bleu"}
    assert data["failing"] == {
        "samples": 10,
        "of": N,
        "reasons": {"detector:shout": 10, "metric:chrf": 10},
    }
    outputs = {s["sample_id"]: s["output"] for s in data["worst_samples"]}
    assert outputs["s0"] == ODD_OUTPUTS["s0"]  # the data, verbatim
    assert data["clustering"] is None and data["errors"] == []


def test_html_report_escapes_model_output(reader, demo) -> None:
    html = render(
        build_report(reader, "run", plugins=demo["plugins"], run=demo["a"], worst=10), "html"
    )
    assert SCRIPT not in html and "<img src=x" not in html and "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'NO <mark title="shout: shouting">IDEA</mark>' in html
    assert "Content-Security-Policy" in html and "http://" not in html.replace("http://e", "")
    assert html.count("<table") == 2 and html.count("<svg") == 5  # 4 sparklines, 1 bar chart


def test_every_sample_on_request(reader, demo) -> None:
    doc = build_report(reader, "run", plugins=demo["plugins"], run=demo["a"], samples=True)
    data = json.loads(render(doc, "json"))
    assert [s["sample_id"] for s in data["samples"]] == [f"s{i}" for i in range(N)]
    assert "All samples" in render(doc, "markdown")


def test_plugin_errors_and_clusters_appear_when_the_run_has_them(tmp_path) -> None:
    @detector("fragile")
    def fragile(item: Any) -> None:
        if item.sample.id == "s3":
            raise RuntimeError("cannot read this one")

    class FragilePlugin:
        @staticmethod
        @hookimpl
        def harness_register_detectors(registry: Any) -> None:
            registry.add_detector(fragile)

    directory = write_suite(tmp_path / "suite", n=6)
    (directory / "suite.yaml").write_text(
        (directory / "suite.yaml")
        .read_text()
        .replace("  - name: shout", "  - fragile\n  - name: shout")
    )
    plugins = make_plugins((FragilePlugin(), "fragile-test"))
    with Store.writer(tmp_path / "s.duckdb") as store:
        run = evaluate(load_suite(directory), mock_spec(), store, plugins, FAST)
        with store.transaction() as con:
            clustering_id = con.execute(
                "INSERT INTO clusterings (run_id, featurizer, featurizer_args, clusterer, clusterer_args, "
                "n_failures, n_clusters, unclustered, created_at) VALUES (?, 'tfidf', '{}', 'kmeans', '{}', 6, 1, 0, ?) "
                "RETURNING clustering_id",
                [run.run_id, utcnow()],
            ).fetchone()[0]
            insert(
                con,
                "clusters",
                {
                    "clustering_id": [clustering_id],
                    "cluster_id": [0],
                    "label": ["echoed prompts"],
                    "top_terms": [["word", "define"]],
                    "dominant_issue": [None],
                    "tags": [[]],
                    "size": [6],
                    "mean_score": [12.5],
                    "score_metric": ["chrf"],
                    "examples": [["s2", "s4"]],
                    "reasons": ["{}"],
                },
            )
    with Store.reader(tmp_path / "s.duckdb") as store:
        doc = build_report(store, "run", plugins=plugins, run=run.run_id)
    text = render(doc, "terminal", width=80)
    assert longest_line(text) <= 80
    assert "Plugin errors" in text and "fragile" in text and "RuntimeError: cannot read" in text
    assert "1 plugin error(s) were recorded" in text
    assert "Clusters" in text and "echoed prompts" in text and "cluster 0: echoed prompts" in text
    data = json.loads(render(doc, "json"))
    assert data["errors"][0]["sample_id"] == "s3" and data["errors"][0]["hook"] == "Detector.detect"
    assert data["clustering"]["clusters"][0]["examples"] == ["s2", "s4"]


# ---------------------------------------------------------------------------
# The compare report
# ---------------------------------------------------------------------------


def test_compare_finds_exactly_the_fixed_samples_with_paired_tests(reader, demo) -> None:
    doc = build_report(reader, "compare", plugins=demo["plugins"], run_a=demo["a"], run_b=demo["b"])
    data = json.loads(render(doc, "json"))
    assert set(data["fixed"]) == FIXED_BY_B and data["broken"] == []
    metrics = {m["metric"]: m for m in data["metrics"]}

    em = metrics["exact_match"]
    assert em["test"] == "mcnemar exact"
    # 6 discordant pairs, all in B's favour: p = 2 * 0.5^6.
    assert (
        em["p_value"]
        == pytest.approx(scipy_stats.binomtest(6, 6, 0.5).pvalue)
        == pytest.approx(0.03125)
    )
    assert em["difference"] == pytest.approx(6 / N) and em["verdict"] == "better"
    assert {f["sample_id"] for f in em["fixed"]} == FIXED_BY_B

    chrf = metrics["chrf"]
    assert (
        chrf["test"] == "paired bootstrap"
        and chrf["p_value"] < 0.05
        and chrf["verdict"] == "better"
    )
    assert {f["sample_id"] for f in chrf["fixed"]} == FIXED_BY_B and chrf["criterion"] == "≥ 50"
    # The p-value is the paired bootstrap over the stored statistics, with the metric's formula.
    q = Queries(reader, registry=demo["plugins"].registry)
    paired = q.paired_stats(demo["a"], demo["b"], "chrf")
    expected = paired_bootstrap(
        paired.stats_a, paired.stats_b, q.score_function(q.run(demo["b"]), "chrf"), seed=12345
    )
    assert chrf["p_value"] == expected.p_value and chrf["mde"] == pytest.approx(expected.mde)
    assert (
        metrics["wer"]["difference"] < 0 and metrics["wer"]["verdict"] == "better"
    )  # lower is better
    assert (
        metrics["bleu"]["criterion"] is None and metrics["bleu"]["fixed"] == []
    )  # no sample_threshold

    text = render(doc, "terminal", width=80)
    assert longest_line(text) <= 80
    assert "Fixed: fail in A, pass in B (6)" in text and "Broken: pass in A, fail in B (0)" in text
    assert "0.031" in text  # McNemar's p


def test_flips_are_listed_worst_first_in_both_directions(reader, demo) -> None:
    doc = build_report(
        reader, "compare", plugins=demo["plugins"], run_a=demo["b"], run_b=demo["a"], flips=2
    )
    data = json.loads(render(doc, "json"))
    assert set(data["broken"]) == FIXED_BY_B and data["fixed"] == []
    chrf = next(m for m in data["metrics"] if m["metric"] == "chrf")
    changes = [f["change"] for f in chrf["broken"]]
    assert changes == sorted(changes) and all(c < 0 for c in changes)
    assert chrf["verdict"] == "worse"
    text = render(doc, "terminal", width=100)
    assert text.count("╭─ sample") == 2 and "and 4 more" in text


def test_a_run_compared_with_itself_shows_no_difference(reader, demo) -> None:
    doc = build_report(reader, "compare", plugins=demo["plugins"], run_a=demo["a"], run_b=demo["a"])
    data = json.loads(render(doc, "json"))
    for m in data["metrics"]:
        assert m["difference"] == 0 and m["p_value"] == 1.0 and m["verdict"] == "no difference"
        assert m["fixed"] == [] and m["broken"] == []
    assert "compared with itself: no difference" in render(doc, "terminal", width=80)


def test_compare_refuses_runs_of_different_suites(tmp_path, demo) -> None:
    plugins = demo["plugins"]
    with Store.writer(tmp_path / "s.duckdb") as store:
        first = evaluate(
            load_suite(write_suite(tmp_path / "one", name="one", n=4)),
            mock_spec(),
            store,
            plugins,
            FAST,
        )
        second = evaluate(
            load_suite(write_suite(tmp_path / "two", name="two", n=4)),
            mock_spec(),
            store,
            plugins,
            FAST,
        )
    with (
        Store.reader(tmp_path / "s.duckdb") as store,
        pytest.raises(ConfigError, match="suite 'one' and run 2 suite 'two'.*same suite"),
    ):
        build_report(store, "compare", plugins=plugins, run_a=first.run_id, run_b=second.run_id)


def test_compare_warns_when_the_suite_changed(tmp_path, demo) -> None:
    plugins = demo["plugins"]
    suite = load_suite(write_suite(tmp_path / "s", n=8))
    with Store.writer(tmp_path / "s.duckdb") as store:
        full = evaluate(suite, mock_spec(), store, plugins, FAST)
        part = evaluate(suite, mock_spec(), store, plugins, EvalOptions(limit=5, resamples=200))
    with Store.reader(tmp_path / "s.duckdb") as store:
        data = json.loads(
            render(
                build_report(
                    store, "compare", plugins=plugins, run_a=full.run_id, run_b=part.run_id
                ),
                "json",
            )
        )
    assert any("suite differs" in n for n in data["notices"])
    assert all(m["n"] == 5 and m["only_a"] == 3 for m in data["metrics"])


def test_compare_html_escapes_both_outputs(reader, demo) -> None:
    html = render(
        build_report(reader, "compare", plugins=demo["plugins"], run_a=demo["a"], run_b=demo["b"]),
        "html",
    )
    assert SCRIPT not in html and "&lt;script&gt;" in html and "<svg" in html


# ---------------------------------------------------------------------------
# show_report, custom views, the CLI
# ---------------------------------------------------------------------------


def test_show_report_writes_files_under_harness_reports_by_default(
    reader, demo, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = show_report(reader, "run", format="html", plugins=demo["plugins"], run="latest")
    assert path == Path(
        "harness-reports"
    ) / f"run-{demo['b']}.html" and path.read_text().startswith("<!doctype html>")
    target = show_report(
        reader,
        "compare",
        format="markdown",
        output=tmp_path / "out",
        plugins=demo["plugins"],
        run_a=demo["a"],
        run_b=demo["b"],
    )
    assert target == tmp_path / "out" and target.read_text().startswith("# Compare")  # a file name
    (tmp_path / "dir").mkdir()
    inside = show_report(
        reader,
        "run",
        format="json",
        output=tmp_path / "dir",
        plugins=demo["plugins"],
        run=demo["a"],
    )
    assert inside == tmp_path / "dir" / f"run-{demo['a']}.json"
    with pytest.raises(ConfigError, match="unknown report format 'pdf'"):
        show_report(reader, "run", format="pdf", plugins=demo["plugins"])


def test_a_team_can_register_its_own_view(reader, demo) -> None:
    class Headline(ReportView):
        name = "headline"
        description = "one line per run"

        def build(self, queries: Queries, *, run: str | int = "latest") -> Document:
            info = queries.run(run)
            main = next(
                s for s in queries.corpus_scores(info.run_id) if s.metric == info.main_metric
            )
            doc = Document(f"Run {info.run_id}", kind="headline", name=f"headline-{info.run_id}")
            doc.add(Paragraph(f"{info.main_metric} = {main.value:.1f}"))
            doc.data = {"value": main.value}
            return doc

    class Plugin:
        @staticmethod
        @hookimpl
        def harness_register_reports(registry: Any) -> None:
            registry.add_report(Headline())

    plugins = make_plugins((Plugin(), "headline-test"))
    text = render(build_report(reader, "headline", plugins=plugins, run=demo["a"]), "terminal")
    assert "chrf = " in text
    with pytest.raises(UnknownComponentError, match="Did you mean 'run'"):
        build_report(reader, "rnu", plugins=plugins)


def _cli(demo: dict[str, Any], *args: str) -> Any:
    # The CLI loads plugins itself: the test detector comes in as a plugin file.
    plugin = demo["root"] / "shout_plugin.py"
    plugin.write_text(
        "import re\nfrom harness import Issue, detector, hookimpl\n\n"
        "@detector('shout')\ndef shout(item, min_len: int = 3):\n"
        "    m = re.search(r'[A-Z]{%d,}' % min_len, item.output)\n"
        "    return Issue(severity=0.9, message='shouting', start=m.start(), end=m.end()) if m else None\n\n"
        "@hookimpl\ndef harness_register_detectors(registry):\n    registry.add_detector(shout)\n"
    )
    return CliRunner().invoke(
        main,
        ["--store", str(demo["path"]), "--no-autoload", "--plugin", str(plugin), *args],
        catch_exceptions=False,
    )


def test_cli_show_compare_and_sql(demo, tmp_path) -> None:
    result = _cli(demo, "show", "latest~1", "--worst", "2")
    assert result.exit_code == 0, result.output
    assert (
        f"Run {demo['a']} · demo v1" in result.output and "Worst samples by chrf" in result.output
    )

    out = tmp_path / "c.json"
    result = _cli(
        demo, "compare", str(demo["a"]), str(demo["b"]), "--format", "json", "--output", str(out)
    )
    assert result.exit_code == 0, result.output
    assert set(json.loads(out.read_text())["fixed"]) == FIXED_BY_B

    result = _cli(
        demo,
        "sql",
        "SELECT metric, round(value, 3) AS v FROM corpus_scores WHERE run_id = 1 ORDER BY metric",
        "--csv",
    )
    assert result.exit_code == 0 and result.output.splitlines()[0] == "metric,v"
    assert "exact_match,0.667" in result.output
    result = _cli(
        demo, "sql", "SELECT sample_id, refs FROM samples WHERE run_id = 1 LIMIT 2", "--json"
    )
    assert json.loads(result.output)[0] == {"sample_id": "s0", "refs": [answer("s0")]}
    result = _cli(demo, "sql", "SELECT run_id, status FROM runs")
    assert result.exit_code == 0 and "completed" in result.output and "2 row(s)" in result.output


def test_cli_mistakes_are_one_line_with_exit_code_2(demo) -> None:
    for args, message in (
        (("show", "42"), "no run 42"),
        (("sql", "DROP TABLE runs"), "read-only"),
        (("sql", "SELEC 1"), "SQL error"),
        (("compare", "1"), None),  # latest is run 2: a valid comparison
    ):
        result = _cli(demo, *args)
        if message is None:
            assert result.exit_code == 0, result.output
            continue
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output


def test_sample_values_hold_every_samples_score(reader, demo) -> None:
    values = Queries(reader).sample_values(demo["a"])["exact_match"]
    assert np.sum(values) == N - len(BAD_IN_A)


def test_a_failed_run_still_has_a_report(tmp_path, demo) -> None:
    def broken(prompt: str) -> str:
        raise RuntimeError("the model fell over")

    original = MockBackend.responder
    MockBackend.responder = staticmethod(broken)
    try:
        with Store.writer(tmp_path / "s.duckdb") as store, pytest.raises(RuntimeError):
            evaluate(load_suite(write_suite(tmp_path / "suite", n=3)), mock_spec(), store, demo["plugins"])
    finally:
        MockBackend.responder = original
    with Store.reader(tmp_path / "s.duckdb") as store:
        doc = build_report(store, "run", plugins=demo["plugins"])
    text = render(doc, "terminal", width=80)
    assert "error: run 1 failed: RuntimeError: the model fell over" in text
    assert "no scores stored for this run" in text and "0 of 3 samples fail" in text
    assert "Worst samples" not in text
    assert json.loads(render(doc, "json"))["run"]["status"] == "failed"


def test_run_report_puts_scores_first_and_versions_behind_verbose(reader, demo) -> None:
    short = render(build_report(reader, "run", plugins=demo["plugins"], run=demo["a"]), "terminal", width=80)
    headings = [line.strip(" ─━═") for line in short.splitlines()]
    assert headings.index("Metrics") < headings.index("Failing samples") < headings.index("Run") < headings.index("Issues"), short
    assert "versions" not in short and "harness.plugins.metrics" not in short
    full = render(
        build_report(reader, "run", plugins=demo["plugins"], run=demo["a"], verbose=True), "terminal", width=80
    )
    assert "versions" in full and "git revision" in full


def test_compare_shows_stored_values_of_a_metric_it_cannot_test() -> None:
    from harness.reports.compare import metrics_table
    from harness.score.comparison import MetricComparison

    untested = MetricComparison(
        "my_metric", True, n=30, only_a=0, only_b=0,
        not_tested="unknown metric 'my_metric' (load the plugin that provides it with --plugin)",
    )
    table = metrics_table([untested], "chrf", 1000, 0, {"my_metric": (41.5, 47.25)})
    row = table.rows[0]
    assert row[1:4] == [41.5, 47.25, "+5.75"]
    assert row[7].text == "not tested"
