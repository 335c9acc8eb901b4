"""The read-only web viewer: a Starlette app of server-rendered Jinja2 pages over a store.

Every page opens the store read-only for the length of the request (so that a running
`harness eval` can still write between requests) and never takes the writer lock.
Templates autoescape everything, and a Content-Security-Policy allows scripts only from
the viewer's own origin (the vendored Vega files in `static/`), so that a model output
holding markup is shown as text and could not run even if an escape were missed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from harness.errors import HarnessError
from harness.store.browse import PAGE_SIZE, Browse, RunFilter, SampleFilter
from harness.store.core import Store
from harness.store.queries import Queries
from harness.view import charts

HERE = Path(__file__).parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
MAX_PAGE = 500


class BadRequest(Exception):
    """A query parameter that cannot be read; answered with 400 and the reason."""


def create_app(store_path: str | Path, registry: Any = None) -> Starlette:
    """The viewer over the store at `store_path`. `registry` (from `load_plugins`) lets
    run-vs-run pages test corpus metrics; without it they show the stored values."""
    Store.reader(store_path).close()  # a missing or outdated store fails here, not per page
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _num
    env.globals["highlight"] = highlight
    env.globals["short"] = _short
    env.globals["url"] = _url

    def page(handler: Callable[[Request, Browse, Queries], tuple[str, dict[str, Any]]]) -> Any:
        async def endpoint(request: Request) -> Response:
            store = Store(Path(store_path), read_only=True)
            try:
                queries = Queries(store, registry)
                with queries.session():
                    template, context = handler(request, Browse(store), queries)
                    body = env.get_template(template).render(request=request, **context)
                status = 200
            except BadRequest as exc:
                body, status = env.get_template("error.html").render(message=str(exc)), 400
            except HarnessError as exc:
                body, status = env.get_template("error.html").render(message=str(exc)), 404
            finally:
                store.close()
            return HTMLResponse(body, status_code=status)

        return endpoint

    routes = [
        Route("/", page(runs_page)),
        Route("/runs/{run_id:int}", page(run_page)),
        Route("/runs/{run_id:int}/samples", page(samples_page)),
        Route("/runs/{run_id:int}/samples/{sample_id:path}", page(sample_page)),
        Route("/compare", page(compare_page)),
        Route("/loops", page(loops_page)),
        Route("/loops/{loop_id:int}", page(loop_page)),
        Route("/datasets", page(datasets_page)),
        Route("/datasets/{manifest_hash}", page(dataset_page)),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)])
    app.state.facets = {}
    return app


class SecurityHeaders:
    """Adds the CSP and friends to every response (pages, static files, errors)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in _security_headers().items():
                    headers[key] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


# ---------------------------------------------------------------------------
# Pages: each returns (template, context)
# ---------------------------------------------------------------------------


def runs_page(request: Request, browse: Browse, queries: Queries) -> tuple[str, dict[str, Any]]:
    q = request.query_params
    where = RunFilter(
        suite=q.get("suite") or None,
        model=q.get("model") or None,
        label=q.get("label") or None,
        status=q.get("status") or None,
    )
    offset, limit = _paging(request)
    return "runs.html", {
        "title": "Runs",
        "page": browse.runs(where, offset=offset, limit=limit),
        "facets": browse.run_facets(),
        "where": where,
        "params": {k: v for k, v in where.__dict__.items() if v},
    }


def run_page(request: Request, browse: Browse, queries: Queries) -> tuple[str, dict[str, Any]]:
    run = queries.run(request.path_params["run_id"])
    with queries.session():
        previous = browse.previous_run(run.run_id, run.suite_name)
        return "run.html", {
            "title": f"Run {run.run_id} · {run.suite_name} v{run.suite_version}",
            "run": run,
            "scores": queries.corpus_scores(run.run_id),
            "failing": queries.failing_count(run.run_id),
            "reasons": queries.failure_reasons(run.run_id),
            "detectors": queries.detector_summaries(run.run_id),
            "examples": queries.issue_examples(run.run_id, per_detector=3),
            "clustering": queries.clustering(run.run_id),
            "errors": queries.errors(run.run_id),
            "previous": previous,
        }


def samples_page(request: Request, browse: Browse, queries: Queries) -> tuple[str, dict[str, Any]]:
    run = queries.run(request.path_params["run_id"])
    where = _sample_filter(request)
    offset, limit = _paging(request)
    return "samples.html", {
        "title": f"Samples of run {run.run_id}",
        "run": run,
        "where": where,
        "params": where.as_params(),
        "facets": _facets(request, browse, run.run_id, run.status),
        "page": browse.samples(run.run_id, where, offset=offset, limit=limit),
    }


def sample_page(request: Request, browse: Browse, queries: Queries) -> tuple[str, dict[str, Any]]:
    run = queries.run(request.path_params["run_id"])
    sample_id = request.path_params["sample_id"]
    rows = browse.sample_rows(run.run_id, [sample_id])
    if not rows:
        raise HarnessError(f"run {run.run_id} has no sample {sample_id!r}")
    return "sample.html", {
        "title": f"Sample {sample_id} · run {run.run_id}",
        "run": run,
        "sample": rows[0],
        "other_runs": browse.other_runs(run.run_id, sample_id),
        "training_rows": browse.training_rows_for(run.run_id, sample_id),
    }


def compare_page(request: Request, browse: Browse, queries: Queries) -> tuple[str, dict[str, Any]]:
    from harness.score.comparison import compare_runs

    a_ref, b_ref = request.query_params.get("a"), request.query_params.get("b")
    if not a_ref or not b_ref:
        raise BadRequest("give the two runs to compare: /compare?a=RUN&b=RUN")
    a, b = queries.run(a_ref), queries.run(b_ref)
    comparisons = compare_runs(queries, a.run_id, b.run_id, resamples=1000)
    flipped = []
    for comparison in comparisons:
        for kind, flips in (("fixed", comparison.fixed), ("broken", comparison.broken)):
            shown = flips[:PAGE_SIZE]
            ids = [f.sample_id for f in shown]
            rows_a = {r["sample_id"]: r for r in browse.sample_rows(a.run_id, ids)}
            rows_b = {r["sample_id"]: r for r in browse.sample_rows(b.run_id, ids)}
            flipped.append(
                {
                    "metric": comparison.metric,
                    "kind": kind,
                    "total": len(flips),
                    "criterion": comparison.criterion,
                    "rows": [
                        {"flip": f, "a": rows_a.get(f.sample_id), "b": rows_b.get(f.sample_id)}
                        for f in shown
                    ],
                }
            )
    return "compare.html", {
        "title": f"Run {a.run_id} vs run {b.run_id}",
        "a": a,
        "b": b,
        "comparisons": comparisons,
        "flipped": flipped,
        "same_suite": a.suite_hash == b.suite_hash,
    }


def loops_page(request: Request, browse: Browse, queries: Queries) -> tuple[str, dict[str, Any]]:
    return "loops.html", {"title": "Loops", "loops": queries.loops(limit=200)}


def loop_page(request: Request, browse: Browse, queries: Queries) -> tuple[str, dict[str, Any]]:
    info = queries.loop(request.path_params["loop_id"])
    iterations = queries.iterations(info.loop_id)
    guards = browse.guard_scores([it.guard_run_id for it in iterations if it.guard_run_id])
    main_metric = next(
        (queries.run(it.eval_run_id).main_metric for it in iterations if it.eval_run_id), "main metric"
    )
    main_points = [
        {
            "iteration": it.iteration,
            "value": it.main_value,
            "low": it.main_ci[0],
            "high": it.main_ci[1],
            "decision": it.decision,
        }
        for it in iterations
        if it.main_value is not None
    ]
    guard_points = [
        {
            "iteration": it.iteration,
            "value": guards[it.guard_run_id]["value"],
            "low": guards[it.guard_run_id]["ci_low"],
            "high": guards[it.guard_run_id]["ci_high"],
            "decision": it.decision,
        }
        for it in iterations
        if it.guard_run_id in guards
    ]
    guard_metric = next(iter(guards.values()))["metric"] if guards else None
    by_training = {it.training_id: it.iteration for it in iterations if it.training_id}
    curves = [
        {**p, "run": f"iteration {by_training[p['training_id']]}"}
        for p in browse.training_curves(list(by_training))
    ]
    added = {d["manifest_hash"]: d for d in browse.added_by_source([it.manifest_hash for it in iterations if it.manifest_hash])}
    plots = {"main": charts.metric_by_iteration(main_points, main_metric, f"{info.suite_name}: {main_metric} by iteration")}
    if guard_points:
        plots["guard"] = charts.metric_by_iteration(
            guard_points, guard_metric or "guard", f"guard {info.guard_suite}: {guard_metric} by iteration"
        )
    if curves:
        plots["curves"] = charts.training_curves(curves)
    return "loop.html", {
        "title": f"Loop {info.loop_id} · {info.suite_name}",
        "info": info,
        "iterations": iterations,
        "main_metric": main_metric,
        "guards": guards,
        "plots": plots,
        "added": added,
        "points": len(main_points),
    }


def datasets_page(request: Request, browse: Browse, queries: Queries) -> tuple[str, dict[str, Any]]:
    return "datasets.html", {"title": "Datasets", "datasets": browse.datasets()}


def dataset_page(request: Request, browse: Browse, queries: Queries) -> tuple[str, dict[str, Any]]:
    dataset = browse.dataset(request.path_params["manifest_hash"])
    if dataset is None:
        raise HarnessError(f"no dataset {request.path_params['manifest_hash']!r} in this store")
    source = request.query_params.get("source") or None
    offset, limit = _paging(request)
    return "dataset.html", {
        "title": f"Dataset {dataset['manifest_hash'][:12]}",
        "dataset": dataset,
        "source": source,
        "params": {"source": source} if source else {},
        "page": browse.dataset_rows(dataset["manifest_hash"], source=source, offset=offset, limit=limit),
    }


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def highlight(text: str | None, issues: list[dict[str, Any]] | list[tuple[int, int, str]]) -> list[tuple[str, str | None]]:
    """`text` cut into (segment, message) pieces; message is set on the pieces an issue
    marks (the template wraps them in <mark>). Overlapping spans merge into the first."""
    if not text:
        return [(text or "", None)]
    spans: list[tuple[int, int, str]] = []
    for issue in issues:
        if isinstance(issue, dict):
            start, end, message = issue.get("span_start"), issue.get("span_end"), issue.get("message", "")
        else:
            start, end, message = issue
        if start is not None and end is not None and 0 <= start < end:
            spans.append((start, min(end, len(text)), f"{issue.get('detector', '')}: {message}" if isinstance(issue, dict) else message))
    pieces: list[tuple[str, str | None]] = []
    cursor = 0
    for start, end, message in sorted(spans):
        if start < cursor:
            continue
        if start > cursor:
            pieces.append((text[cursor:start], None))
        pieces.append((text[start:end], message))
        cursor = end
    if cursor < len(text):
        pieces.append((text[cursor:], None))
    return pieces


def _facets(request: Request, browse: Browse, run_id: int, status: str) -> dict[str, list[Any]]:
    """The sample filter's choices; kept for runs that have finished (they no longer
    change, except by a new clustering, which the cache key notices)."""
    key = (run_id, browse.latest_clustering(run_id))
    cache: dict[Any, Any] = request.app.state.facets
    if status == "running" or key not in cache:
        cache[key] = browse.sample_facets(run_id)
    return cache[key]


def _sample_filter(request: Request) -> SampleFilter:
    q = request.query_params
    status = q.get("status") or ""
    if status not in ("", "pass", "fail"):
        raise BadRequest(f"status must be 'pass' or 'fail', not {status!r}")
    return SampleFilter(
        tag=q.get("tag") or None,
        cluster=_int(q.get("cluster"), "cluster"),
        detector=q.get("detector") or None,
        failing=None if not status else status == "fail",
        metric=q.get("metric") or None,
        low=_float(q.get("low"), "low"),
        high=_float(q.get("high"), "high"),
        text=q.get("text") or None,
    )


def _paging(request: Request) -> tuple[int, int]:
    offset = _int(request.query_params.get("offset"), "offset") or 0
    limit = _int(request.query_params.get("limit"), "limit") or PAGE_SIZE
    if offset < 0 or not 0 < limit <= MAX_PAGE:
        raise BadRequest(f"offset must be >= 0 and limit between 1 and {MAX_PAGE}")
    return offset, limit


def _int(raw: str | None, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, not {raw!r}") from None


def _float(raw: str | None, name: str) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a number, not {raw!r}") from None
    if math.isnan(value):
        raise BadRequest(f"{name} must be a number, not NaN")
    return value


def _url(path: str, **params: Any) -> str:
    """A link with the query string built from the non-empty params."""
    query = urlencode({k: v for k, v in params.items() if v is not None and v != ""})
    return path + ("?" + query if query else "")


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return f"{value:.{digits}f}"
    return str(value)


def _short(text: str | None, width: int = 160) -> str:
    if text is None:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


def _security_headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
