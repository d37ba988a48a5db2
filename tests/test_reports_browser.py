"""The reports in a real browser: headless Chromium against a running server, and an exported
file opened with the network blocked. Screenshots go to a temp dir (path printed with -s)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from promptblame.reports.data import incident_view
from promptblame.reports.render import render_incident
from promptblame.settings import Settings
from promptblame.store import open_store
from tests.server_process import CLI, env_for, free_port
from tests.test_reports import report_traffic

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (apt-get install -y chromium chromium-driver; .ci/run does)",
)
# The browser's own background services (updates, time, sync) also show up in its net log.
BROWSER_HOSTS = re.compile(r"^https?://([^/]*\.)?(google\.com|googleapis\.com|gvt1\.com)(/|$)")


def chromium(profile: Path, *args: str, offline: bool = False) -> str:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        f"--user-data-dir={profile}",
    ]
    if offline:
        flags += ["--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9"]
    assert CHROMIUM is not None
    done = subprocess.run(
        [CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """A server in local no-auth mode over the report test traffic: (base url, incident id,
    its data directory)."""
    data = tmp_path_factory.mktemp("browser") / "data"
    store = open_store(Settings(data_dir=data))
    try:
        incident_id = report_traffic(store)
    finally:
        store.close()
    port = free_port()
    env = env_for(data, PROMPTBLAME_AUTH_DISABLED="true", PROMPTBLAME_DEFAULT_PROJECT="acme")
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"server exited with {proc.returncode}"
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not become healthy in 60 s"
            time.sleep(0.1)
        yield base, incident_id, data
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("screenshots")
    print(f"screenshots in {path}")
    return path


def test_the_incident_report_renders_verdict_chart_and_table_and_runs_no_payload(
    site, shots, tmp_path
):
    base, incident_id, _ = site
    url = f"{base}/reports/incidents/{incident_id}"
    dom = chromium(tmp_path / "p1", "--dump-dom", url)
    assert "Prompt answer@v2 regressed correct on bot by -22.5 pt" in dom
    assert 'id="verdict"' in dom and "explains 100% of the shift" in dom.replace("It e", "e")
    assert re.search(r'<div class="chart-box" id="metric-chart"><svg ', dom)
    assert re.search(r'<div id="versions">.*?<td class="mono">answer@v2</td>', dom, re.S)
    # The payload is on the page as text, and did nothing.
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom
    assert "<title>pwned" not in dom and not re.search(r"<body[^>]*data-pwned", dom)
    assert '<img src="x"' not in dom and "<script" not in dom
    png = shots / "incident.png"
    chromium(tmp_path / "p2", f"--screenshot={png}", "--window-size=1280,2600", url)
    assert png.stat().st_size > 50_000


def test_the_overview_renders_incidents_and_trends(site, shots, tmp_path):
    base, incident_id, _ = site
    url = f"{base}/reports/"
    dom = chromium(tmp_path / "p1", "--dump-dom", url)
    assert f'href="/reports/incidents/{incident_id}"' in dom
    assert "badge sev-critical" in dom and '<div class="grid2" id="trends">' in dom
    assert dom.count("<svg ") == 1 and 'id="rollouts"' in dom
    png = shots / "overview.png"
    chromium(tmp_path / "p2", f"--screenshot={png}", "--window-size=1280,1400", url)
    assert png.stat().st_size > 20_000


def test_an_exported_report_loads_with_the_network_off(shots, tmp_path):
    """The file `promptblame report incident` writes (the server holds its data directory, so
    the export here renders the same traffic from a store of its own)."""
    out = tmp_path / "report.html"
    store = open_store(Settings(data_dir=tmp_path / "export"))
    try:
        exported_id = report_traffic(store)
        out.write_text(render_incident(incident_view(store, "acme", exported_id), api_base=None))
    finally:
        store.close()
    netlog = tmp_path / "net.json"
    dom = chromium(
        tmp_path / "p1", f"--log-net-log={netlog}", "--dump-dom", out.as_uri(), offline=True
    )
    assert "regressed correct on bot" in dom and "<svg " in dom and 'id="versions"' in dom
    urls = set(re.findall(r'"url":"([^"]+)"', netlog.read_text()))
    page_requests = {u for u in urls if not BROWSER_HOSTS.match(u) and u != out.as_uri()}
    assert page_requests == set(), json.dumps(sorted(page_requests))
    png = shots / "exported-offline.png"
    chromium(
        tmp_path / "p2",
        f"--screenshot={png}",
        "--window-size=1280,1200",
        out.as_uri(),
        offline=True,
    )
    assert png.stat().st_size > 20_000


def test_exporting_while_the_server_holds_the_data_directory_says_what_to_do(site, tmp_path):
    _, incident_id, data = site
    out = tmp_path / "r.html"
    done = subprocess.run(
        [*CLI, "report", "incident", incident_id, "--project", "acme", "--out", str(out)],
        env=env_for(data),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1 and "stop `promptblame serve` first" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()
