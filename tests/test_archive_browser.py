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


@pytest.fixture
def evolved(tmp_path) -> Archive:
    """An archive as evolve writes one: operators, changed kinds, what judged each, gains.

        v0 seed ── v1 mutation +0.1 ── v3 pipeline (probe) +0.05 ── v6 (old record) rejected
           │          └─ v4 llm edit of the proposer (meta, inherits v1's scores) ── v5 mutation +0.3
           │                                                                       └─ v7 mutation rejected
           └─ v2 crossover rejected
    """
    def edit(operator, kinds, judged, scores, **more):
        return {"proposer": "evolve", "operator": operator, "changed_kinds": kinds, "judged_by": judged,
                "scores": scores, **more}

    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "plugin.py").write_text("LIMIT = 0\n")
    archive = Archive.init(tmp_path / "E", seed, meta=edit("seed", [], "answers", {"score": 0.5, "gain": 0.0}))
    add = lambda parent, limit, meta, status="admitted": archive.add(
        parent=parent, files={"plugin.py": f"LIMIT = {limit}\n"}, meta=meta, status=status)
    add("v0", 1, edit("mutation", ["refiner"], "answers", {"score": 0.6, "gain": 0.1}))
    add("v0", 2, edit("crossover", ["selector"], "answers", {"score": 0.2}), "rejected")
    add("v1", 3, edit("pipeline", ["pipeline"], "probe", {
        "score": 0.9, "probe": 0.9, "probe_short": 0.7, "gain": 0.05,
        "probe_by_difficulty": {"1": 0.95, "2": 0.85}, "probe_short_by_difficulty": {"1": 0.8, "2": 0.6}}))
    add("v1", 4, edit("llm", ["proposer"], "meta", {"score": 0.6, "gain": 0.1},
                      stages={"meta": {"ok": True, "inherited_from": "v1"}}))
    add("v4", 5, edit("mutation", ["optimizer"], "probe", {"score": 0.7, "probe": 0.7, "gain": 0.3}))
    add("v3", 6, {"proposer": "mutation", "scores": {"score": 0.1}}, "rejected")
    add("v5", 7, edit("mutation", ["refiner", "selector"], "both", {"score": 0.3}), "rejected")
    yield archive
    archive.close()


def test_api_gives_each_variants_edit_and_clade(evolved):
    server = serve_in_thread(evolved.path)
    try:
        variants = json.loads(get(server.url + "api/variants")[2])
        edits = {row[1]: dict(zip(variants["fields"], row))["edit"] for row in variants["rows"]}
        assert edits["v4"] == ["llm", ["proposer"], "meta"] and edits["v6"] == [None, None, None]
        assert edits["v7"] == ["mutation", ["refiner", "selector"], "both"]
        # by gain: v5 rises above v4 (a success); v4's inherited scores are no rise; v7 is rejected
        assert json.loads(get(server.url + "api/variant/v4")[2])["clade"] == {
            "successes": 1.0, "failures": 2.0, "members": 3, "rate": 0.4}
        assert json.loads(get(server.url + "api/variant/v0")[2])["clade"]["members"] == 8
        evolved.add(parent="v5", files={"plugin.py": "LIMIT = 8\n"}, meta={"scores": {"score": 0.9, "gain": 0.5}})
        assert json.loads(get(server.url + "api/variant/v4")[2])["clade"] == {  # not a stale cache
            "successes": 2.0, "failures": 2.0, "members": 4, "rate": 0.5}
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.browser
def test_browser_shows_operators_edits_clades_and_probes(evolved, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium); run .ci/setup-browser.sh")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    server = serve_in_thread(evolved.path)
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(server.url)
            page.wait_for_selector("#operators")

            # which operators pay: made, admitted, share admitted, best gain among the admitted
            cells = lambda row: [c.strip() for c in page.locator(f"{row} td").all_inner_texts()]
            assert cells("#operators tr[data-operator='mutation']") == ["mutation", "3", "2", "67%", "+0.3"]
            assert cells("#operators tr[data-operator='crossover']") == ["crossover", "1", "0", "0%", "–"]
            assert cells("#operators tr[data-operator='pipeline']") == ["pipeline", "1", "1", "100%", "+0.05"]
            assert cells("#operators tr[data-operator='llm']") == ["llm", "1", "1", "100%", "+0.1"]
            assert page.locator("#operators tr[data-operator]").count() == 5  # v6 has no operator recorded

            # the variant list: operator, changed kinds and judged_by as badges
            assert page.inner_text("#recent tr[data-variant='v4'] td.operator .badge.op") == "llm"
            assert page.inner_text("#recent tr[data-variant='v4'] td.changed .badge.kind") == "proposer"
            assert page.inner_text("#recent tr[data-variant='v4'] td.judged .badge.judged-meta") == "meta"
            assert page.locator("#recent tr[data-variant='v7'] td.changed .badge.kind").all_inner_texts() == [
                "refiner", "selector"]
            assert page.inner_text("#recent tr[data-variant='v6'] td.judged") == "–"
            page.screenshot(path=str(tmp_path / "operators.png"), full_page=True)

            # a meta edit: its badges, the variant it inherited its scores from, its clade
            page.click("#recent tr[data-variant='v4'] a[data-variant='v4']")
            page.wait_for_selector("#clade")
            assert page.inner_text("#operator") == "llm"
            assert page.inner_text("#changed-kinds") == "proposer"
            assert page.inner_text("#judged-by .badge.judged-meta") == "meta"
            assert page.get_attribute("#inherited a", "data-variant") == "v1"
            clade = page.inner_text("#clade")
            assert re.search(r"rate\s+0\.4\b", clade) and re.search(r"members\s+3\b", clade), clade
            assert re.search(r"successes\s+1\b", clade) and re.search(r"failures\s+2\b", clade), clade
            page.screenshot(path=str(tmp_path / "meta-variant.png"), full_page=True)

            # a probed variant: its training probe by difficulty (full and short), against its parent's
            page.goto(server.url + "#/v/v3")
            page.wait_for_selector("#probe-difficulty")
            rows = [r.split("\t") for r in page.locator("#probe-difficulty tr").all_inner_texts()[1:]]
            assert [[c.strip() for c in r] for r in rows] == [
                ["1", "0.95", "0.8", "–", "–"], ["2", "0.85", "0.6", "–", "–"], ["all", "0.9", "0.7", "–", "–"]]
            assert page.inner_text("#judged-by .badge.judged-probe") == "probe"
            assert page.locator("#inherited").count() == 0
            assert re.search(r"members\s+2\b", page.inner_text("#clade"))  # v3 and the rejected v6
            assert errors == []
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
