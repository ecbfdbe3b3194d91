"""The chat page in a real headless Chromium (Debian's `chromium`, driven by Playwright): it streams a
reply with its stats, and Stop ends the generation on the server. Slow; skipped without Chromium or
Playwright. EDGE_LLM_SCREENSHOT=docs/serve-page.png also writes the screenshot the docs show."""
import os
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

from serve_helpers import ServerThread  # noqa: E402

CHROMIUM = os.environ.get("EDGE_LLM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM, reason="no chromium on PATH (apt-get install chromium)")]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server():
    with ServerThread(slots=2) as s:
        yield s


def _send(page, text):
    page.fill("#input", text)
    page.keyboard.press("Enter")


def test_page_streams_replies_with_speed_energy_and_cost(browser, server):
    page = browser.new_page(viewport={"width": 1000, "height": 640})
    remote = []
    page.on("request", lambda r: remote.append(r.url) if not r.url.startswith(server.url) else None)
    page.goto(server.url + "/")
    page.wait_for_selector("#model:has-text('tiny')")
    page.fill("#temperature", "0")
    page.fill("#max_tokens", "60")
    expected = "".join(r.text for r in server.model.chat([{"role": "user", "content": "Quote John 3:16."}],
                                                         params=server.model.sampling(temperature=0),
                                                         max_new_tokens=60))
    _send(page, "Quote John 3:16.")
    page.wait_for_selector(".assistant .bubble[data-done='1']", timeout=30_000)
    assert page.inner_text(".assistant .bubble").strip() == expected.strip()
    stats = page.inner_text(".assistant .stats")
    assert "tok/s" in stats and "first token" in stats and " J " in stats and "USD" in stats, stats
    _send(page, "请背诵李白的《静夜思》。")
    page.locator(".assistant .bubble[data-done='1']").nth(1).wait_for(timeout=30_000)
    second = page.locator(".assistant .stats").nth(1).inner_text()
    assert "cached" in second and "(0 cached)" not in second, second    # the resent history hit the cache
    assert not remote, f"the page fetched something off the server: {remote}"
    shot = os.environ.get("EDGE_LLM_SCREENSHOT")
    if shot:
        Path(shot).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=shot)
    page.close()


def test_stop_button_ends_the_generation_on_the_server(browser, server):
    page = browser.new_page()
    page.goto(server.url + "/")
    page.fill("#max_tokens", "1900")
    # ban the end of text so the reply would run to max_tokens
    page.evaluate("""() => { const orig = window.fetch; window.fetch = (url, opts) => {
        if (opts && opts.body) { const b = JSON.parse(opts.body); b.logit_bias = {"2": -100}; opts.body = JSON.stringify(b); }
        return orig(url, opts); }; }""")
    _send(page, "Tell me everything.")
    deadline = time.monotonic() + 30          # (the page's CSP forbids Playwright's string-evaluating waits)
    while len(page.inner_text(".assistant .bubble")) <= 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.engine.active, "the reply should still be running"
    page.click("#stop")
    page.wait_for_selector(".assistant .bubble[data-done='1']", timeout=10_000)
    assert "stopped" in page.inner_text(".assistant .stats")
    assert server.wait_idle(5), "Stop did not free the server's slot"
    assert server.engine.metrics.replies.get("cancelled") >= 1
    assert server.engine.metrics.generated_tokens.get() < 1900 + 200
    page.close()
