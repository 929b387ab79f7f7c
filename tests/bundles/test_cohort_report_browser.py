"""Issue #22 (cohort quick-look page): ``report.html`` of a real angiogram bundle run, loaded in headless Chromium.

One bundle run (a session run, see tests/_parallel_runs.py) over three studies, one with an odd name and one that
fails at loading; Chromium (Debian ``chromium``; skipped with a reason outside CI when absent) loads the page from its
``file://`` URL: the script ran (``data-ready``), no script error was reported (the page's ``window.onerror`` writes
``#report-error``), one row per study, the GIF overlays load, the script sorts (``#sort=`` fragments); a screenshot
is taken (``UPDATE_REPORT_SCREENSHOT=1`` copies it to the committed ``benchmarks/speed/results/report_screenshot.png``;
otherwise the test never writes into the repository).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests._parallel_runs import session_run
from tests._system_tools import require_tool
from tests.bundles.conftest import REPO, run_inference
from tests.engines.test_cohort_report import parse_report

SAMPLE = REPO / "bundles" / "angiogram_signature_activation" / "sample_data"
SCREENSHOT = REPO / "benchmarks" / "speed" / "results" / "report_screenshot.png"
ODD = 'odd <&> "q" é.nii.gz'


def _chromium(exe: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--allow-file-access-from-files"]
    return subprocess.run(
        [*cmd, f"--user-data-dir={cwd / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


@session_run("cohort_report_browser")
def _report_run(root: Path) -> Callable[[], tuple[subprocess.CompletedProcess, Path]]:
    """The study folder written now; the bundle run over it, to call later (a session run: see
    tests/_parallel_runs.py)."""
    data, out = root / "data", root / "out"
    data.mkdir()
    shutil.copy(SAMPLE / "case_000.dcm", data / "case_000.dcm")
    shutil.copy(SAMPLE / "case_004.nii.gz", data / ODD)
    (data / "broken.dcm").write_bytes((SAMPLE / "case_003.dcm").read_bytes()[:40000])  # fails at loading
    return lambda: (run_inference("angiogram_signature_activation", data, out), out)


@pytest.fixture(scope="module")
def report(session_runs):
    exe = require_tool("chromium", "chromium")
    result, out = session_runs("cohort_report_browser")
    assert "2 succeeded, 0 skipped, 1 failed" in result.stdout, result.stderr[-3000:]
    return exe, out / "report.html", out.parent


def test_report_loads_in_headless_chromium(report):
    exe, page, root = report
    url = page.resolve().as_uri()
    dumped = _chromium(exe, "--virtual-time-budget=3000", "--dump-dom", url, cwd=root)
    assert dumped.returncode == 0, dumped.stderr[-3000:]
    page_dom = parse_report(dumped.stdout)
    assert page_dom.ready and not page_dom.error, dumped.stdout[:3000]
    assert sorted(r["cells"][0] for r in page_dom.rows) == sorted(["case_000.dcm", ODD, "broken.dcm"])
    images = [src for r in page_dom.rows for src in r["imgs"]]
    assert len(images) == 2 and all(src.endswith(".gif") for src in images)
    for src in images:  # relative, percent-encoded links that resolve beside the page
        assert not src.startswith(("/", "file:")) and (page.parent / unquote(src)).is_file(), src
    # the script sorts (a URL fragment clicks the header once, or twice for descending order)
    for fragment, order in (
        ("status-desc", ["case_000.dcm", ODD, "broken.dcm"]),
        ("prediction-desc", [ODD, "case_000.dcm", "broken.dcm"]),
    ):
        dom = _chromium(exe, "--virtual-time-budget=3000", "--dump-dom", f"{url}#sort={fragment}", cwd=root).stdout
        assert [r["cells"][0] for r in parse_report(dom).rows] == order, fragment
    # console errors (uncaught exceptions, failed loads) are logged by Chromium at level ERROR / "Uncaught"
    logged = _chromium(
        exe, "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000", "--dump-dom", url, cwd=root
    )
    console = [line for line in logged.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console


def test_report_screenshot(report):
    exe, page, root = report
    shot = root / "shot.png"
    result = _chromium(
        exe,
        "--virtual-time-budget=3000",
        "--hide-scrollbars",
        f"--screenshot={shot}",
        "--window-size=1200,800",
        page.resolve().as_uri(),
        cwd=root,
    )
    assert result.returncode == 0 and shot.is_file(), result.stderr[-3000:]
    assert 1000 < shot.stat().st_size < 300_000
    if os.environ.get("UPDATE_REPORT_SCREENSHOT") == "1":  # refresh the committed picture only when asked
        shutil.copy(shot, SCREENSHOT)
