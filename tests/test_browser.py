"""The HTML report in a real browser: headless Chromium renders it, shows hostile model
output as text, runs none of it, and leaves a screenshot in test-artifacts/report.png."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from harness.components.plugin_manager import load_plugins
from harness.report.show import show_report
from harness.score.evaluate import EvalOptions, evaluate
from harness.store import Store
from harness.suite.load import load_suite
from harness.testing import MockBackend, mock_backend_plugin, mock_spec

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Each would mark the page if it ran: a script element, an event handler, a javascript: URL.
PAYLOADS = {
    "s0": "<script>document.documentElement.setAttribute('data-pwned','script')</script>",
    "s1": "<img src=x onerror=\"document.documentElement.setAttribute('data-pwned','img')\">",
    "s2": "<a href=\"javascript:alert(1)\">click</a></div></dd></dl><script>document.title='pwned'</script>",
}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs headless Chromium at /usr/bin/chromium (apt-get install chromium)",
    ),
]


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def _png_pixels(path: Path) -> tuple[int, int, bytes]:
    """Width, height and the decompressed image data of a PNG (no imaging library needed)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, zlib.decompress(idat)


@pytest.fixture
def report_html(tmp_path: Path) -> Path:
    suite_dir = tmp_path / "suite"
    suite_dir.mkdir()
    (suite_dir / "suite.yaml").write_text(
        "name: browser\nversion: 1\ndata: data.jsonl\ninstruction: Repeat the input.\n"
        "metrics:\n  - name: chrf\n    sample_threshold: 50\n  - exact_match\n"
    )
    rows = [{"id": f"s{i}", "input": f"item s{i}", "reference": f"answer {i}"} for i in range(8)]
    (suite_dir / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))

    def respond(prompt: str) -> str:
        sample_id = prompt.split("### Input:\n")[1].split("\n")[0].removeprefix("item ")
        return PAYLOADS.get(sample_id, f"answer {sample_id.removeprefix('s')}")

    plugins = load_plugins(autoload=False, extra=[(mock_backend_plugin, "mock")])
    original = MockBackend.responder
    MockBackend.responder = staticmethod(respond)
    try:
        with Store.writer(tmp_path / "store.duckdb") as store:
            run = evaluate(
                load_suite(suite_dir), mock_spec(), store, plugins, EvalOptions(resamples=200)
            )
    finally:
        MockBackend.responder = original
    with Store.reader(tmp_path / "store.duckdb") as store:
        path = show_report(
            store,
            "run",
            format="html",
            output=tmp_path / "report.html",
            plugins=plugins,
            run=run.run_id,
        )
    assert path is not None
    return path


def test_the_html_report_renders_in_chromium_and_runs_no_model_output(
    report_html: Path, tmp_path: Path
) -> None:
    dom = _chromium(tmp_path, "--dump-dom", report_html.as_uri()).stdout
    assert "<table" in dom and "<svg" in dom and "Worst samples by chrf" in dom
    # Neither the scripts nor the onerror handler ran: the root element and title are as written.
    assert re.search(r"<html[^>]*>", dom).group(0) == '<html lang="en">'
    assert "<title>Run 1 · browser v1</title>" in dom
    # No element came from the data (the report's own links all point inside the page).
    assert re.search(r"<(script|img)[\s>]", dom) is None
    assert all(href.startswith("#") for href in re.findall(r'<a href="([^"]*)"', dom))
    # The payloads are there, as text the reader can see.
    assert (
        "&lt;script&gt;document.documentElement.setAttribute('data-pwned','script')&lt;/script&gt;"
        in dom
    )
    assert "&lt;img src=x onerror=" in dom

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report.png"
    screenshot.unlink(missing_ok=True)
    _chromium(
        tmp_path, f"--screenshot={screenshot}", "--window-size=1280,2000", report_html.as_uri()
    )
    width, height, pixels = _png_pixels(screenshot)
    assert (width, height) == (1280, 2000)
    assert len(set(pixels[::7])) > 16, "the screenshot is blank"
