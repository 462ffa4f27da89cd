"""The report in a real browser: headless Chromium (Debian's chromium + chromium-driver).

``make test`` installs both with apt-get where they are missing (target ``browser``). The page
is served from 127.0.0.1; the test checks that every image decoded, that the tables hold every
run, and that the console stayed free of errors, and keeps a full-page screenshot in
artifacts/report-browser.png.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from report_fixtures import add_probes, make_record
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from bnlab.lab.report import build_report

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """Build a report (one finished experiment with probes, one interrupted) and serve it."""
    full, cut = tmp_path / "tiny", tmp_path / "cut"
    rec = make_record(full)
    add_probes(full, rec)
    rec2 = make_record(cut, name="tiny-interrupted", status="interrupted", stop_after=4)
    build_report([full, cut], tmp_path / "site" / "report.html")
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "site")
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        names = [r["name"] for r in rec.runs] + [r["name"] for r in rec2.runs]
        yield f"http://127.0.0.1:{server.server_port}/report.html", names
    finally:
        server.shutdown()
        server.server_close()


def _driver(profile: Path) -> webdriver.Chrome:
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not Path(exe).exists():
            raise RuntimeError(
                f"{exe} is missing: run `make browser` (as root it runs apt-get install "
                "chromium chromium-driver) or install those Debian packages"
            )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


def test_report_renders_in_headless_chromium(served: tuple[str, list[str]], tmp_path: Path) -> None:
    url, run_names = served
    driver = _driver(tmp_path / "profile")
    try:
        driver.get(url)
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth]);"
        )
        assert len(images) == 7, images  # 5 for the finished experiment, 2 for the partial one
        undecoded = [alt for alt, complete, width in images if not complete or width <= 0]
        assert not undecoded, f"images that did not decode: {undecoded}"
        cells = driver.execute_script(
            "return Array.from(document.querySelectorAll('table.runs td:nth-child(2)'))"
            ".map(td => td.textContent);"
        )
        assert sorted(cells) == sorted(run_names)
        badges = driver.execute_script(
            "return Array.from(document.querySelectorAll('.badge')).map(b => b.textContent);"
        )
        assert badges == ["partial"]
        height = driver.execute_script("return document.documentElement.scrollHeight;")
        driver.set_window_size(1280, min(int(height) + 100, 16000))
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "report-browser.png"
        assert driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        logs = driver.get_log("browser")
        errors = [e for e in logs if e.get("level") in ("SEVERE", "ERROR")]
        assert not errors, f"console errors: {errors}"
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)
