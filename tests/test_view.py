"""The web viewer served in-process (Starlette's TestClient): every page answers, the
sample filters narrow, run vs run shows the planted fixed sample, the loop page carries
one point per iteration, model output is escaped, and the store is only read."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import view_store
from starlette.testclient import TestClient

from harness.store import Store
from harness.store.browse import Browse, SampleFilter
from harness.view.app import CSP, create_app, highlight


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> view_store.ViewStore:
    return view_store.build(tmp_path_factory.mktemp("view"))


@pytest.fixture(scope="module")
def client(built: view_store.ViewStore) -> TestClient:
    return TestClient(create_app(built.path, built.plugins.registry))


def _sample_ids(html: str) -> list[str]:
    return re.findall(r'<tr class="(?:failing|passing)" data-sample="([^"]+)"', html)


def test_every_page_answers_with_the_csp(client: TestClient, built: view_store.ViewStore) -> None:
    first, second = built.iteration_runs[:2]
    manifest = Browse(Store.reader(built.path)).datasets()[0]["manifest_hash"]
    for url in (
        "/", f"/runs/{first}", f"/runs/{first}/samples", f"/runs/{first}/samples/term00",
        f"/compare?a={first}&b={second}", "/loops", f"/loops/{built.loop_id}", "/datasets",
        f"/datasets/{manifest}", "/static/vega.min.js",
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe-eval" not in CSP


def test_runs_filter_by_suite(client: TestClient) -> None:
    everything = client.get("/").text
    guards = client.get("/?suite=guard").text
    assert 'href="/runs/7"' in everything and 'href="/runs/7"' not in guards
    assert guards.count('<td><a href="/runs/') == 3  # one guard run per iteration


def test_sample_filters_narrow(client: TestClient, built: view_store.ViewStore) -> None:
    run = built.iteration_runs[1]  # the first 15 words fixed, the other 15 still failing
    assert len(_sample_ids(client.get(f"/runs/{run}/samples").text)) == 30
    failing = _sample_ids(client.get(f"/runs/{run}/samples?status=fail").text)
    assert failing == [f"term{i:02d}" for i in range(15, 30)]
    odd_failing = _sample_ids(client.get(f"/runs/{run}/samples?status=fail&tag=odd").text)
    assert odd_failing == [f"term{i:02d}" for i in range(16, 30, 2)]
    assert _sample_ids(client.get(f"/runs/{run}/samples?metric=chrf&low=99").text) == [
        f"term{i:02d}" for i in range(15)
    ]
    assert _sample_ids(client.get(f"/runs/{run}/samples?text=TERM07").text) == ["term07"]
    paged = client.get(f"/runs/{run}/samples?limit=10&offset=20").text
    assert _sample_ids(paged) == [f"term{i:02d}" for i in range(20, 30)]
    assert 'rel="prev"' in paged and 'rel="next"' not in paged


def test_cluster_and_detector_filters(built: view_store.ViewStore) -> None:
    with Store.reader(built.path) as store:
        browse = Browse(store)
        run = built.mining_runs[0]  # the loop clusters the failures of the mining split
        clusters = browse.sample_facets(run)["clusters"]
        assert clusters and sum(c["size"] for c in clusters) == 30
        members = browse.samples(run, SampleFilter(cluster=clusters[0]["cluster_id"]), limit=100)
        assert members.total == clusters[0]["size"]
        assert {r["cluster_id"] for r in members.rows} == {clusters[0]["cluster_id"]}
        flagged = browse.samples(built.hostile_run, SampleFilter(detector="repetition"))
        assert flagged.total == 6 and all(r["issues"] for r in flagged.rows)
        assert browse.samples(built.hostile_run, SampleFilter(detector="length")).total == 0


def test_run_vs_run_shows_the_fixed_sample_with_both_outputs(client: TestClient, built: view_store.ViewStore) -> None:
    first, second = built.iteration_runs[:2]
    html = client.get(f"/compare?a={first}&b={second}").text
    assert "paired bootstrap" in html and "better" in html
    fixed = html.split('<table class="flips fixed">')[1].split("</table>")[0]
    assert f'data-sample="{built.fixed_sample}"' in fixed
    row = fixed.split(f'data-sample="{built.fixed_sample}"')[1].split("</tr>")[0]
    reference = view_store.reference(built.fixed_sample)
    assert row.count(reference) == 2  # the reference, and run B's output (which matches it)
    assert f"<pre class=\"output\">{built.fixed_sample}</pre>" in row  # run A echoed the word


def test_loop_page_has_one_point_per_iteration(client: TestClient, built: view_store.ViewStore) -> None:
    html = client.get(f"/loops/{built.loop_id}").text
    specs = {
        name: json.loads(body)
        for name, body in re.findall(r'data-chart="chart-(\w+)">(.*?)</script>', html, flags=re.S)
    }
    assert set(specs) == {"main", "guard", "curves"}
    points = specs["main"]["data"]["values"]
    assert [p["iteration"] for p in points] == [0, 1, 2]
    assert points[0]["value"] < points[1]["value"] < points[2]["value"]
    assert all(p["low"] <= p["value"] <= p["high"] for p in points)
    assert {p["run"] for p in specs["curves"]["data"]["values"]} == {"iteration 1", "iteration 2"}
    assert specs["main"]["$schema"].endswith("v6.4.1.json")


def test_model_output_is_escaped(client: TestClient, built: view_store.ViewStore) -> None:
    for url in (
        f"/runs/{built.hostile_run}",
        f"/runs/{built.hostile_run}/samples",
        f"/runs/{built.hostile_run}/samples/h0",
    ):
        html = client.get(url).text
        assert "&lt;script&gt;document.title" in html, url
        assert "<script>document" not in html and "<img src=x" not in html, url


def test_bad_parameters_get_a_clear_400(client: TestClient, built: view_store.ViewStore) -> None:
    response = client.get(f"/runs/{built.hostile_run}/samples?low=abc")
    assert response.status_code == 400 and "low must be a number, not &#39;abc&#39;" in response.text
    assert client.get("/runs/999").status_code == 404
    assert "no run 999" in client.get("/runs/999").text
    assert client.get("/compare?a=1").status_code == 400


def test_the_viewer_reads_while_a_writer_holds_the_store(client: TestClient, built: view_store.ViewStore) -> None:
    with Store.writer(built.path):
        assert client.get("/").status_code == 200
    lock = Path(str(built.path) + ".lock")
    assert lock.exists()  # taken by the writer above, never by the viewer


def test_highlight_marks_spans_and_skips_overlaps() -> None:
    issues = [
        {"detector": "d", "message": "a", "span_start": 2, "span_end": 5},
        {"detector": "d", "message": "b", "span_start": 3, "span_end": 7},
        {"detector": "d", "message": "c", "span_start": None, "span_end": None},
    ]
    assert highlight("0123456789", issues) == [("01", None), ("234", "d: a"), ("56789", None)]
    assert highlight(None, issues) == [("", None)]
