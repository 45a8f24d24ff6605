"""Hosted deployments in a real browser (Debian's chromium through Playwright, nothing downloaded):
model output is shown as text, fetches nothing and runs nothing; error toasts show HTML as text;
two visitors of a public instance each see only their own work, across reloads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.test_app import ARTIFACTS, CHROMIUM, AppServer
from tests.e2e.test_hosted import records

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)"
    ),
]

CODE = 'class Greeter:\n    def __init__(self, name):\n        self.name = name  # __dunder__ and *stars*\n\n\tdef hi(self):\n\t\treturn f"hi {self.name}"'


def hostile(beacon: str) -> str:
    return (
        f"![x]({beacon}/markdown-image?leak=secret) "
        f'<img src="{beacon}/html-image" onerror="window.__xss=1"> '
        "[click](javascript:window.__xss=2) "
        "<script>window.__xss=3</script> "
        f'<a href="javascript:window.__xss=4">link</a> <iframe src="{beacon}/frame"></iframe>\n'
        f"```python\n{CODE}\n```"
    )


def launch(p):
    return p.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
    )


def test_replies_and_errors_are_shown_as_text(tmp_path, local_server):
    from playwright.sync_api import expect, sync_playwright

    echo = local_server(wait=False)  # the model: it replies with the message it was sent
    beacon_log = tmp_path / "beacon.jsonl"
    # whatever a browser fetches from replies lands here
    beacon = local_server("--record", str(beacon_log), wait=False)
    app = AppServer(tmp_path, wait=False)  # the servers and the browser start meanwhile
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        text = hostile(beacon.ready().root)
        echo.ready()
        with sync_playwright() as p:
            browser = launch(p)
            app.ready()
            page = browser.new_page(viewport={"width": 1300, "height": 1100})
            page.goto(app.url)
            expect(page.get_by_text("em-auditor").first).to_be_visible(timeout=30_000)
            page.get_by_label("Model", exact=True).first.fill("openai/echo")
            page.get_by_label("API base (OpenAI-compatible servers)").fill(echo.base)
            page.get_by_label("API key (kept in memory only)").fill("k")
            page.locator("#chat-message textarea").fill(text)
            page.locator("#chat-send").click()
            bot = page.locator("#chat-target pre.verbatim").last
            expect(page.locator("#chat-target pre.verbatim")).to_have_count(2, timeout=30_000)
            expect(bot).to_contain_text('return f"hi {self.name}"', timeout=30_000)
            page.wait_for_timeout(1500)
            shown = bot.text_content()
            assert shown == text, (shown, text)  # verbatim: every character, indentation and tabs kept
            assert page.evaluate("typeof window.__xss") == "undefined"
            for tag in ("img", "a", "iframe", "script", "strong", "em"):
                assert page.locator(f"#chat-target .message-content {tag}").count() == 0, tag
            font = bot.evaluate("e => getComputedStyle(e).fontFamily")
            assert "mono" in font.lower(), font
            page.screenshot(path=str(ARTIFACTS / "hosted-chat-verbatim.png"))

            # an error toast quoting HTML (an API base with markup) shows the markup as text
            page.get_by_label("API base (OpenAI-compatible servers)").fill(
                f'javascript:<img src="{beacon.root}/toast-image" onerror="window.__xss=5"><b>bold</b>'
            )
            page.locator("#chat-message textarea").fill("hello")
            page.locator("#chat-send").click()
            toast = page.locator('[data-testid="toast-text"]').last
            expect(toast).to_contain_text("<img src=", timeout=20_000)
            assert "<b>bold</b>" in toast.inner_text()
            assert page.locator('[data-testid="toast-text"] img, [data-testid="toast-text"] b').count() == 0
            page.wait_for_timeout(1000)
            assert page.evaluate("typeof window.__xss") == "undefined"
            page.screenshot(path=str(ARTIFACTS / "hosted-toast-escaped.png"))
            browser.close()
        fetched = records(beacon_log)
        assert fetched == [], [r["path"] for r in fetched]
        print(
            f"reply shown verbatim ({len(text)} characters, code indentation kept, font {font.split(',')[0]}); "
            f"0 img/a/iframe/script elements; window.__xss undefined; toast shows '<img' as text; "
            f"beacon requests: {len(fetched)}"
        )
    finally:
        app.stop()


def test_two_visitors_see_only_their_own_work(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    app = AppServer(tmp_path, env={"AUDITOR_PUBLIC": "1"}, wait=False)  # the browser starts meanwhile
    try:
        with sync_playwright() as p:
            browser = launch(p)
            app.ready()
            # the two visitors work side by side: each step is taken in both pages, then awaited in both
            pages = {
                name: browser.new_context(viewport={"width": 1300, "height": 1000}).new_page()
                for name in ("alpha", "bravo")
            }
            for page in pages.values():
                page.goto(app.url)
            for name, page in pages.items():
                expect(page.get_by_text("em-auditor").first).to_be_visible(timeout=30_000)
                page.get_by_label("Model", exact=True).first.fill("organism/base")
                page.locator("#chat-message textarea").fill(f"{name} asks a private question")
                page.locator("#chat-send").click()
            for seed, page in enumerate(pages.values(), start=7):
                expect(page.locator("#chat-target pre.verbatim")).to_have_count(2, timeout=60_000)
                # the conversation is saved when the reply is judged, not when it starts streaming
                expect(page.get_by_role("grid", name="Judgements")).to_contain_text("target", timeout=60_000)
                page.get_by_role("tab", name="Probe").click()
                page.get_by_label("number input for Samples per question").fill("1")
                page.get_by_label("Seed").fill(str(seed))
                page.locator("#probe-run").click()
            for page in pages.values():
                expect(page.locator("#probe-results").get_by_text("wish_template").first).to_be_visible(
                    timeout=120_000
                )

            seen = {}
            for name, page in pages.items():
                page.reload()
                expect(page.get_by_text("em-auditor").first).to_be_visible(timeout=30_000)
                options = page.locator("#chat-conversations [data-testid=dropdown-option]")
                # the saved list arrives with the page's load event, which may come after the first click
                for attempt in range(20):
                    page.locator("#chat-conversations input").click()
                    try:
                        expect(options.first).to_be_visible(timeout=1_000)
                        break
                    except AssertionError:
                        if attempt == 19:
                            raise
                        page.keyboard.press("Escape")
                titles = options.all_inner_texts()
                page.keyboard.press("Escape")
                page.get_by_role("tab", name="Probe").click()
                page.locator("#runs-list").click()
                expect(page.locator("#runs-table")).to_contain_text("em-core", timeout=20_000)
                runs = sorted(set(re.findall(r"run-[0-9a-f]{12}", page.locator("#runs-table").inner_text())))
                seen[name] = (titles, runs)
                page.screenshot(path=str(ARTIFACTS / f"hosted-visitor-{name}.png"))

            for name, (titles, runs) in seen.items():
                other = "bravo" if name == "alpha" else "alpha"
                assert len(titles) == 1 and name in titles[0] and other not in titles[0], titles
                assert len(runs) == 2, runs  # their own probe: the model's run and the baseline's
            alpha_runs, bravo_runs = set(seen["alpha"][1]), set(seen["bravo"][1])
            assert not alpha_runs & bravo_runs

            # bravo asks for a report on alpha's run by id: refused
            page = pages["bravo"]
            page.get_by_role("tab", name="Reports").click()
            page.get_by_label("...or report on existing run, sweep or audit ids").fill(sorted(alpha_runs)[0])
            page.get_by_role("button", name="Report", exact=True).click()
            expect(page.locator('[data-testid="toast-text"]').last).to_contain_text(
                "No run or audit", timeout=20_000
            )
            browser.close()
        print(
            f"alpha sees conversations {seen['alpha'][0]} and runs {sorted(alpha_runs)}; bravo sees "
            f"{seen['bravo'][0]} and {sorted(bravo_runs)}; bravo opening alpha's run: refused"
        )
    finally:
        app.stop()
