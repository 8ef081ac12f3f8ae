"""The archive browser: its JSON API over real HTTP, and the pages in Debian's chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from selfloop.archive import Archive
from selfloop.archive.server import serve_in_thread

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
STATIC = Path(__file__).resolve().parent.parent / "archive"


def selfloop_executable() -> str:
    beside = Path(sys.executable).parent / "selfloop"
    return str(beside) if beside.exists() else (shutil.which("selfloop") or "selfloop")


def tree(limit: int) -> dict[str, str]:
    return {"__init__.py": "", "select/short.py": f"LIMIT = {limit}\n\n\ndef keep(text):\n    return len(text) <= LIMIT\n"}


@pytest.fixture
def archive(tmp_path) -> Archive:
    seed = tmp_path / "seed"
    for rel, text in tree(10).items():
        (seed / rel).parent.mkdir(parents=True, exist_ok=True)
        (seed / rel).write_text(text)
    archive = Archive.init(tmp_path / "A", seed, meta={"scores": {"score": 0.2}})
    archive.add(parent="v0", files=tree(20), meta={
        "proposer": "llm_edit", "model": "openai/gpt-4o-mini", "summary": "allow longer answers",
        "scores": {"score": 0.6, "held_out": 0.55, "without_model": {"score": 0.05, "visible": 0.125}},
        "decision": "admitted", "reasons": ["score rose by 0.4"],
        "calls": [{"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "PROMPT-TEXT <b>raw</b>"}],
                   "response": "RESPONSE-TEXT", "prompt_tokens": 30, "completion_tokens": 9, "cost_usd": 0.0001, "seconds": 1.2}],
        "sandbox": {"backend": "process", "exit_code": 0, "log_tail": "SANDBOX-LINE 1\nSANDBOX-LINE 2\n"},
    })
    archive.add(parent="v1", files=tree(5), meta={"score": 0.1, "reasons": ["held_out fell"]}, status="rejected")
    archive.add(parent="v0", files=tree(15), meta={"score": 0.4})
    yield archive
    archive.close()


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers.get("Content-Type"), response.read()


def test_api_serves_state_variants_variant_and_diff(archive):
    server = serve_in_thread(archive.path)
    try:
        assert server.server_address[0] == "127.0.0.1"
        status, kind, body = get(server.url)
        assert status == 200 and kind.startswith("text/html") and b"/browser.js" in body
        state = json.loads(get(server.url + "api/state")[2])
        assert state["count"] == 4 and state["metrics"] == ["held_out", "score", "without_model.score", "without_model.visible"]
        variants = json.loads(get(server.url + "api/variants")[2])
        rows = [dict(zip(variants["fields"], row)) for row in variants["rows"]]
        assert [(r["id"], r["parent"], r["status"]) for r in rows] == [
            ("v0", None, "admitted"), ("v1", "v0", "admitted"), ("v2", "v1", "rejected"), ("v3", "v0", "admitted")]
        one = json.loads(get(server.url + "api/variant/v1")[2])
        assert "+LIMIT = 20" in one["diff"] and one["children"] == ["v2"] and one["parent_scores"] == {"score": 0.2}
        assert one["meta"]["calls"][0]["response"] == "RESPONSE-TEXT"
        across = json.loads(get(server.url + "api/diff?a=v3&b=v1")[2])["diff"]
        assert "-LIMIT = 15" in across and "+LIMIT = 20" in across
        with pytest.raises(urllib.error.HTTPError) as missing:
            get(server.url + "api/variant/v42")
        assert missing.value.code == 404 and "unknown variant" in json.loads(missing.value.read())["error"]
        # a variant added by another writer shows up without restarting the server
        Archive(archive.path).add(parent="v3", files=tree(16), meta={"score": 0.45})
        assert json.loads(get(server.url + "api/state")[2])["count"] == 5
    finally:
        server.shutdown()
        server.server_close()


def test_pages_use_no_network_assets():
    for name in ("browser.html", "browser.js", "browser.css"):
        text = (STATIC / name).read_text()
        urls = set(re.findall(r"https?://[^\s\"'`)]+", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)  # an XML namespace, never fetched


@pytest.fixture
def served(archive):
    """`selfloop archive serve` in a subprocess on a free loopback port."""
    proc = subprocess.Popen([selfloop_executable(), "archive", "serve", "--archive", str(archive.path), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
    if not match:
        proc.kill()
        pytest.fail(f"server did not start: {line!r} {proc.stderr.read()}")
    yield match.group(1)
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.browser
def test_browser_shows_tree_variant_diff_compare_and_live_updates(archive, served, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium); run .ci/setup-browser.sh")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.goto(served)

        nodes = page.locator("#lineage circle.node")
        nodes.first.wait_for()
        assert sorted(nodes.evaluate_all("els => els.map(e => e.dataset.id)")) == ["v0", "v1", "v2", "v3"]
        assert page.locator("#lineage circle.node.rejected").evaluate_all("els => els.map(e => e.dataset.id)") == ["v2"]
        fills = {n: page.get_attribute(f"#lineage circle[data-id='{n}']", "fill") for n in ("v0", "v1")}
        assert fills["v0"] != fills["v1"]  # coloured by score
        page.wait_for_selector("#score-chart")  # drawn in the frame after the tree
        page.screenshot(path=str(tmp_path / "home.png"), full_page=True)

        page.click("#lineage circle[data-id='v1']")
        page.wait_for_selector("#diff .ln.add")
        assert page.url.endswith("#/v/v1")
        assert "+LIMIT = 20" in page.inner_text("#diff .ln.add")
        assert "-LIMIT = 10" in page.inner_text("#diff .ln.del")
        assert page.inner_text("#status") == "admitted"
        assert "PROMPT-TEXT <b>raw</b>" in page.inner_text("#calls")  # shown as text, not markup
        assert "RESPONSE-TEXT" in page.inner_text("#calls")
        assert "SANDBOX-LINE 2" in page.inner_text("#sandbox")
        assert "score rose by 0.4" in page.inner_text("#decision")
        assert "+0.4" in page.inner_text("#scores")
        dependence = page.inner_text("#dependence")  # the judge's two scores, side by side
        assert re.search(r"held-out, with the model\s+0\.6\b", dependence), dependence
        assert re.search(r"held-out, without the model\s+0\.05\b", dependence), dependence
        assert re.search(r"visible, without the model\s+0\.125\b", dependence), dependence
        page.screenshot(path=str(tmp_path / "variant.png"), full_page=True)

        page.fill("#cmp-a", "v3")
        page.fill("#cmp-b", "v1")
        page.click("#cmp-go")
        page.wait_for_url(re.compile(r"#/compare/v3/v1$"))
        page.wait_for_selector("text=common ancestor")  # the compare page, not the variant page before it
        assert "+LIMIT = 20" in page.inner_text("#diff") and "-LIMIT = 15" in page.inner_text("#diff")

        page.click("header nav a[href='#/']")
        page.locator("#lineage circle.node").first.wait_for()
        writer = Archive(archive.path)  # another process would do the same: the page polls
        new = writer.add(parent="v1", files=tree(25), meta={"score": 0.9})
        writer.close()
        page.wait_for_selector(f"#lineage circle[data-id='{new}']", timeout=15000)
        assert page.inner_text("#count") == "5"
        assert errors == []
        browser.close()
    assert (tmp_path / "variant.png").stat().st_size > 10_000  # kept for a person to look at


@pytest.mark.slow
@pytest.mark.browser
def test_browser_draws_a_large_archive_densely_and_clicks_by_position(tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium); run .ci/setup-browser.sh")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "plugin.py").write_text("LIMIT = 0\n")
    archive = Archive.init(tmp_path / "big", seed, meta={"score": 0.0})
    ids = ["v0"]
    for start in range(0, 1600, 400):  # a lineage that branches: parents among the last 50
        ids += archive.add_many([{"parent": ids[-1 - (i % min(50, len(ids)))],
                                  "files": {"plugin.py": f"LIMIT = {start + i + 1}\n"},
                                  "meta": {"score": (start + i) / 1600}} for i in range(400)])
    best = archive.best().id
    server = serve_in_thread(archive.path)
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.goto(server.url)
            page.wait_for_selector("#lineage[data-nodes='1601']")
            assert page.locator("#lineage circle").count() == 0  # grouped paths, not 1601 elements
            assert page.locator("#lineage path.node.dense").count() >= 2
            page.locator("#tree-box").scroll_into_view_if_needed()  # the page, not the box inside
            x, y = (float(page.get_attribute("#lineage", name)) for name in ("data-best-x", "data-best-y"))
            box = page.locator("#tree-box").bounding_box()
            scroll = page.evaluate("() => { const b = document.getElementById('tree-box'); return [b.scrollLeft, b.scrollTop]; }")
            page.mouse.click(box["x"] + 1 + x - scroll[0], box["y"] + 1 + y - scroll[1])
            page.wait_for_selector("#diff .ln.add")
            assert page.url.endswith(f"#/v/{best}")
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
        archive.close()
