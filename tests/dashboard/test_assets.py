"""The dashboard page and its assets: served without auth, self-contained (no external
URLs, no inline script), with a strict Content-Security-Policy, and no other file of the
server reachable through the asset route."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import httpx

from api.dashboard.routes import DASHBOARD_DIR
from core.jobs import PIPELINE, TERMINAL, ErrorCode, JobStage, JobStatus
from core.jobs import config as job_config
from core.jobs.vocab import Estimator, ReferenceMode, RiskWeighting, SafetyMode
from core.vocab import FileStatus

# app.js (the page's module script) and the ES modules it imports (index.html preloads them all).
MODULES = (
    "app.js api.js charts.js dom.js estimate.js evaluation.js format.js jobform.js joblist.js jobpage.js "
    "newjob.js notice.js poll.js released.js report.js scan.js signin.js status.js timeline.js upload.js"
).split()
ASSETS = {**{name: "text/javascript" for name in MODULES}, "style.css": "text/css"}
# Modules generated from Python, not files of the folder (index.html preloads them too).
GENERATED = ("vocab.js",)
# The SVG namespace is an identifier the script passes to createElementNS, never fetched.
ALLOWED_URLS = {"http://www.w3.org/2000/svg"}


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self.inline_styles = 0
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href", "action", "poster", "data"):
            if attrs.get(name):
                self.urls.append(attrs[name])
        if any(name.startswith("on") for name in attrs) or "style" in attrs:
            self.inline_styles += 1
        if tag == "script":
            self._in_script = True
            if not attrs.get("src"):
                self.inline_scripts += 1
        if tag == "style":
            self.inline_styles += 1

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False


def test_page_and_assets_are_served_without_auth(live_api):
    page = httpx.get(f"{live_api.base_url}/dashboard")
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp
    assert "connect-src 'self'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "guardtune" in page.text

    links = _Links()
    links.feed(page.text)
    referenced = {urlsplit(u).path for u in links.urls if u.startswith("/dashboard/static/")}
    assert referenced == {f"/dashboard/static/{name}" for name in (*ASSETS, *GENERATED)}
    for name, media_type in ASSETS.items():
        asset = httpx.get(f"{live_api.base_url}/dashboard/static/{name}")
        assert asset.status_code == 200, (name, asset.text)
        assert asset.headers["content-type"].startswith(media_type)
        assert asset.content == (DASHBOARD_DIR / name).read_bytes()

    assert httpx.get(f"{live_api.base_url}/dashboard/", follow_redirects=True).status_code == 200


def _served_vocab(text: str) -> dict[str, object]:
    """``vocab.js``'s exports: one ``export const NAME = Object.freeze(JSON);`` (or ``new Set``) a line."""
    exports = {}
    for line in text.splitlines():
        match = re.fullmatch(r"export const (\w+) = (Object\.freeze|new Set)\((.*)\);", line)
        if match:
            value = json.loads(match[3])
            exports[match[1]] = set(value) if match[2] == "new Set" else value
        else:
            assert line.startswith("/*") or not line, f"vocab.js line not in the generated form: {line!r}"
    return exports


def test_served_vocab_is_core_jobs(live_api):
    response = httpx.get(f"{live_api.base_url}/dashboard/static/vocab.js")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/javascript")
    page = httpx.get(f"{live_api.base_url}/dashboard/static/app.js")
    for header in ("content-security-policy", "x-content-type-options", "referrer-policy", "cache-control"):
        assert response.headers[header] == page.headers[header], header
    assert response.headers["etag"]
    again = httpx.get(f"{live_api.base_url}/dashboard/static/vocab.js")
    assert again.headers["etag"] == response.headers["etag"]
    assert again.content == response.content

    assert _served_vocab(response.text) == {
        "STATUS": {status.name: status.value for status in JobStatus},
        "STAGE": {stage.name: stage.value for stage in JobStage},
        "ERROR": {code.name: code.value for code in ErrorCode},
        "TERMINAL": {status.value for status in TERMINAL},
        "STAGES": [spec.job_stage.value for spec in PIPELINE if spec.job_stage is not None],
        "FILE_STATUS": {status.name: status.value for status in FileStatus},
        # the new-job form's choices: every value of each safety enum, the API's default first
        "SAFETY": {
            "mode": ["adaptive", "constant", "none"],
            "estimator": ["probe", "judge", "both"],
            "risk_weighting": [w.value for w in RiskWeighting],
            "reference": [r.value for r in ReferenceMode],
        },
        "RANGES": {
            "n_epochs": list(job_config.N_EPOCHS_RANGE),
            "batch_size": list(job_config.BATCH_SIZE_RANGE),
            "learning_rate_multiplier": list(job_config.LR_MULTIPLIER_RANGE),
            "beta": list(job_config.DPO_BETA_RANGE),
        },
    }
    safety: Any = _served_vocab(response.text)["SAFETY"]
    assert (safety["mode"][0], safety["estimator"][0]) == (job_config.DEFAULT_MODE, job_config.DEFAULT_ESTIMATOR)
    assert sorted(safety["mode"]) == sorted(SafetyMode) and sorted(safety["estimator"]) == sorted(Estimator)
    assert _served_vocab(response.text)["STAGES"] == list(JobStage)  # JobStage is declared in pipeline order


def test_asset_route_serves_nothing_else(live_api):
    for name in ("missing.js", "index.html", "__init__.py", "..%2Fdashboard.py", "%2e%2e%2fapp.py"):
        response = httpx.get(f"{live_api.base_url}/dashboard/static/{name}")
        assert response.status_code == 404, name
        assert response.json()["error"]["code"] == "not_found"
    for path in ("/dashboard/static/../../api/app.py", "/dashboard/static/..%2F..%2Fcore%2Fsettings.py"):
        response = httpx.get(f"{live_api.base_url}{path}")
        assert response.status_code == 404, path


def test_no_external_urls_and_no_inline_code():
    html = (DASHBOARD_DIR / "index.html").read_text()
    links = _Links()
    links.feed(html)
    for url in links.urls:
        parts = urlsplit(url)
        assert not parts.netloc, f"index.html references {url!r}"
        assert parts.scheme in ("", "data"), f"index.html references {url!r}"
    assert links.inline_scripts == 0, "inline <script> would be blocked by the CSP"
    assert links.inline_styles == 0, "inline style/event attributes would be blocked by the CSP"

    for name in ("index.html", *ASSETS):
        text = (DASHBOARD_DIR / name).read_text()
        urls = set(re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s\"'`)]*", text))
        urls = {u for u in urls if not u.startswith("//") or "." in u.split("/")[2]}
        assert urls <= ALLOWED_URLS, f"{name} names external URLs: {sorted(urls - ALLOWED_URLS)}"
        assert "@import" not in text, name
        assert "url(" not in text.replace("data:", ""), name

    script = "".join((DASHBOARD_DIR / name).read_text() for name in MODULES)
    # The job's words come from vocab.js: no module compares with, lists or keys by a status,
    # stage or error code of its own (display text such as "cancelled" is not matched).
    for word in (*JobStatus, *JobStage, *ErrorCode):
        quoted = rf"[\"']{word}[\"']"
        spelled = re.search(rf"[=!]==?\s*{quoted}|{quoted}\s*[=!]==?|(?:\[|\bid:|\bcase)\s*{quoted}", script)
        assert spelled is None, f"a dashboard module spells {word!r}: {spelled[0]!r}"
    # Text from the API must never be parsed as HTML.
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
