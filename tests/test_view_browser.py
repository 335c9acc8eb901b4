"""The web viewer in a real headless Chromium (Playwright driving Debian's chromium):
pages load without console errors (a CSP violation is one), a filter narrows the samples,
run vs run shows the planted fixed sample, the loop page draws one point per iteration,
and model output never runs. Screenshots go to test-artifacts/view-*.png."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import view_store

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs headless Chromium at /usr/bin/chromium (apt-get install chromium)",
    ),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> view_store.ViewStore:
    return view_store.build(tmp_path_factory.mktemp("view-browser"))


@pytest.fixture(scope="module")
def base_url(built: view_store.ViewStore) -> Iterator[str]:
    import uvicorn

    from harness.view.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(built.path, built.plugins.registry), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the viewer did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.problems = problems  # type: ignore[attr-defined]
    yield page
    context.close()


def _shot(page: object, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"view-{name}.png"
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    assert path.stat().st_size > 10_000, "the screenshot is blank"
    return path


def test_pages_load_without_console_errors(page, base_url: str, built: view_store.ViewStore) -> None:
    first, second = built.iteration_runs[:2]
    for path in (
        "/", f"/runs/{first}", f"/runs/{first}/samples", f"/runs/{second}/samples/term00",
        f"/compare?a={first}&b={second}", "/loops", f"/loops/{built.loop_id}", "/datasets",
        f"/runs/{built.hostile_run}", f"/runs/{built.hostile_run}/samples",
    ):
        response = page.goto(base_url + path)
        assert response.status == 200, path
        page.wait_for_load_state("networkidle")
        assert page.problems == [], (path, page.problems)
    _shot(page, "samples-hostile")
    # The hostile outputs are on the page as text, and none of them ran.
    assert "pwned" not in page.title()
    assert "<script>document.title='pwned'</script>" in page.inner_text("table.samples")


def test_a_filter_narrows_the_samples(page, base_url: str, built: view_store.ViewStore) -> None:
    run = built.iteration_runs[1]
    page.goto(f"{base_url}/runs/{run}/samples")
    assert page.locator("table.samples tbody tr").count() == 30
    page.select_option("select[name=status]", "fail")
    page.select_option("select[name=tag]", "odd")
    page.click("form.filters button[type=submit]")
    page.wait_for_load_state("networkidle")
    rows = page.locator("table.samples tbody tr")
    assert rows.count() == 7
    assert page.locator("table.samples tbody tr.passing").count() == 0
    assert "status=fail" in page.url and "tag=odd" in page.url
    _shot(page, "samples-filtered")
    assert page.problems == []


def test_run_vs_run_shows_the_planted_fixed_sample(page, base_url: str, built: view_store.ViewStore) -> None:
    first, second = built.iteration_runs[:2]
    page.goto(f"{base_url}/compare?a={first}&b={second}")
    fixed = page.locator(f"table.flips.fixed tr[data-sample='{built.fixed_sample}']")
    assert fixed.is_visible()
    cells = fixed.locator("td").all_inner_texts()
    assert cells[1] == view_store.reference(built.fixed_sample)  # the reference
    assert cells[2] == built.fixed_sample  # run A echoed the word
    assert cells[3] == view_store.reference(built.fixed_sample)  # run B learnt it
    assert page.locator("table.comparison td.outcome-better").count() == 1
    _shot(page, "compare")
    assert page.problems == []


def test_the_loop_page_draws_one_point_per_iteration(page, base_url: str, built: view_store.ViewStore) -> None:
    page.goto(f"{base_url}/loops/{built.loop_id}")
    for name in ("main", "guard", "curves"):
        page.wait_for_selector(f"#chart-{name}[data-rendered=true] svg", timeout=20_000)
    points = page.locator("#chart-main g.mark-symbol.role-mark path")
    assert points.count() == 3  # iterations 0, 1 and 2
    assert page.locator("#chart-guard g.mark-symbol.role-mark path").count() == 3
    assert page.locator("#chart-main g.mark-rule.role-mark line").count() == 3  # a CI per iteration
    assert page.locator("#chart-curves g.mark-line.role-mark path").count() >= 2
    _shot(page, "loop")
    assert page.problems == []
