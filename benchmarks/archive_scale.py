"""The variant archive at scale: 10,000 variants in git + SQLite, against one JSON file per program.

Builds an archive of N variants of the project's own plugins/ (each variant edits one file of its
parent; its record carries a proposer prompt and response, scores and a sandbox log tail, about
what a real LLM-proposed variant carries), and writes the same N programs the way OpenEvolve's
checkpoints store them: one JSON file per program holding its full code and metadata. Then, in
the same run, it measures

  - `selfloop archive list --json` end to end (a fresh process), and the table view;
  - listing, best-by-metric and opening one variant in-process, for both stores;
  - adding a variant (median of single adds at full size), for both stores;
  - rebuilding the index from git alone;
  - the browser: the server's first page in chromium until the lineage tree is drawn, and the
    server's resident memory;
  - disk use (loose objects as written, and after `git gc`).

    python benchmarks/archive_scale.py [--variants 10000] [--adds 100] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from selfloop.archive import Archive

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PROPOSERS = ["llm_edit", "mutation", "search_replace"]
# In the page, on the page's own clock (ms since navigation start): when the lineage tree and the
# score chart were first painted (the frame after they entered the document has been rendered).
PAINT_MARKS = """
window.__painted = {};
new MutationObserver(() => {
  for (const [key, id] of [["tree", "lineage"], ["chart", "score-chart"]]) {
    if (document.getElementById(id) && !window.__painted["_" + key]) {
      window.__painted["_" + key] = true;
      requestAnimationFrame(() => setTimeout(() => { window.__painted[key] = performance.now(); }, 0));
    }
  }
}).observe(document, {subtree: true, childList: true});
"""
console = Console(width=max(150, Console().width))


def selfloop_command() -> str:
    beside = Path(sys.executable).parent / "selfloop"
    return str(beside) if beside.exists() else "selfloop"


def synthetic_variant(rng: random.Random, seq: int, parent_files: dict[str, str], parent_score: float):
    """One edit of one plugin file, with a record the size of a real proposer's."""
    files = dict(parent_files)
    path = rng.choice(sorted(p for p in files if p.endswith(".py")))
    lines = files[path].splitlines()
    at = rng.randrange(len(lines) + 1)
    lines.insert(at, f"# tuned by variant v{seq}: threshold = {rng.random():.4f}")
    files[path] = "\n".join(lines) + "\n"
    score = round(min(1.0, max(0.0, parent_score + rng.gauss(0.004, 0.03))), 4)
    admitted = score >= parent_score - 0.02
    prompt = (f"You improve selfloop's plugins. Parent scored {parent_score}. Here is {path}:\n"
              + parent_files[path][:1400])
    meta = {
        "proposer": rng.choice(PROPOSERS), "model": "openai/gpt-4o-mini",
        "summary": f"tune a threshold in {path}",
        "calls": [{"model": "openai/gpt-4o-mini",
                   "messages": [{"role": "system", "content": "Reply with SEARCH/REPLACE blocks."},
                                {"role": "user", "content": prompt}],
                   "response": f"<<<<<<< SEARCH\n{lines[max(0, at - 1)] if lines else ''}\n=======\n"
                               f"{lines[at] if at < len(lines) else ''}\n>>>>>>> REPLACE\n" * 3,
                   "prompt_tokens": 900 + rng.randrange(400), "completion_tokens": 120 + rng.randrange(200),
                   "cost_usd": 0.0002, "seconds": round(rng.uniform(1, 6), 2)}],
        "scores": {"score": score, "smoke": 1.0, "held_out": round(score - 0.03, 4)},
        "decision": "admitted" if admitted else "rejected",
        "reasons": ["held_out within tolerance of parent" if admitted else "held_out fell below parent"],
        "sandbox": {"backend": "docker", "exit_code": 0, "seconds": round(rng.uniform(20, 60), 1),
                    "log_tail": "".join(f"round {r}: accuracy {rng.random():.3f}\n" for r in range(12))},
        "seconds": round(rng.uniform(25, 70), 1),
    }
    return files, meta, "admitted" if admitted else "rejected"


def build(archive: Archive, json_dir: Path, count: int, batch: int, rng: random.Random) -> tuple[float, float]:
    """Adds count variants to the archive (in batches) and writes the same programs as JSON files."""
    trees = {"v0": archive.files("v0")}
    scores = {"v0": 0.3}
    admitted = ["v0"]
    git_seconds = json_seconds = 0.0
    seq = 1
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"building {count} variants", total=count)
        while seq <= count:
            items = []
            for _ in range(min(batch, count - seq + 1)):
                # DGM-like parent choice: mostly among the recent admitted, sometimes any admitted
                parent = rng.choice(admitted[-30:]) if rng.random() < 0.8 else rng.choice(admitted)
                files, meta, status = synthetic_variant(rng, seq, trees[parent], scores[parent])
                items.append({"parent": parent, "files": files, "meta": meta, "status": status})
                seq += 1
            started = time.perf_counter()
            ids = archive.add_many(items)
            git_seconds += time.perf_counter() - started
            started = time.perf_counter()
            for vid, item in zip(ids, items):
                write_openevolve_program(json_dir, vid, item)
            json_seconds += time.perf_counter() - started
            for vid, item in zip(ids, items):
                trees[vid] = item["files"]
                scores[vid] = item["meta"]["scores"]["score"]
                if item["status"] == "admitted":
                    admitted.append(vid)
            progress.advance(task, len(items))
    return git_seconds, json_seconds


def write_openevolve_program(json_dir: Path, vid: str, item: dict) -> None:
    """The fields of an OpenEvolve Program, saved as its checkpoint does: programs/<id>.json."""
    meta = item["meta"]
    program = {
        "id": vid, "code": item["files"], "language": "python", "parent_id": item["parent"],
        "generation": 0, "timestamp": time.time(), "iteration_found": int(vid[1:]),
        "metrics": meta["scores"], "complexity": 0.0, "diversity": 0.0,
        "metadata": {k: v for k, v in meta.items() if k not in ("scores", "calls")},
        "prompts": {"diff_user": {"system": meta["calls"][0]["messages"][0]["content"],
                                  "user": meta["calls"][0]["messages"][1]["content"],
                                  "responses": [meta["calls"][0]["response"]]}},
        "artifacts_json": json.dumps({"sandbox": meta["sandbox"]}), "status": item["status"],
    }
    with open(json_dir / f"{vid}.json", "w") as f:
        json.dump(program, f)


def load_openevolve(json_dir: Path) -> dict[str, dict]:
    """What loading an OpenEvolve checkpoint does: read and parse every program file."""
    programs = {}
    for name in os.listdir(json_dir):
        if name.endswith(".json"):
            with open(json_dir / name) as f:
                program = json.load(f)
            programs[program["id"]] = program
    return programs


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def run_cli(*args) -> float:
    started = time.perf_counter()
    subprocess.run([selfloop_command(), *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def du(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def count_files(path: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(path))


def rss_kib(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    get = lambda key: int(re.search(rf"{key}:\s+(\d+) kB", status).group(1))
    return get("VmRSS"), get("VmHWM")


def measure_server(path: Path, loads: int) -> dict:
    proc = subprocess.Popen([selfloop_command(), "archive", "serve", "--archive", str(path), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = re.search(r"(http://\S+/)", proc.stdout.readline()).group(1)
        import urllib.request

        def fetch_api():
            with urllib.request.urlopen(url, timeout=30) as r:
                r.read()
            with urllib.request.urlopen(url + "api/variants", timeout=30) as r:
                return len(r.read())

        api_seconds, api_bytes = timed(fetch_api, 5)
        out = {"api_s": api_seconds, "api_mb": api_bytes / 1e6, "page_s": None, "nodes": None}
        if CHROMIUM.exists():
            from playwright.sync_api import sync_playwright

            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                page_times, chart_times, outside_times = [], [], []
                for _ in range(loads):
                    page = browser.new_page(viewport={"width": 1400, "height": 900})
                    page.add_init_script(PAINT_MARKS)
                    started = time.perf_counter()
                    page.goto(url)
                    page.wait_for_function("() => window.__painted.tree && window.__painted.chart", timeout=60000)
                    outside_times.append(time.perf_counter() - started)
                    painted = page.evaluate("() => window.__painted")
                    page_times.append(painted["tree"] / 1000)
                    chart_times.append(painted["chart"] / 1000)
                    out["nodes"] = int(page.get_attribute("#lineage", "data-nodes"))
                    page.close()
                browser.close()
            out["page_s"], out["chart_s"] = statistics.median(page_times), statistics.median(chart_times)
            out["outside_s"] = statistics.median(outside_times)
        out["rss_mib"], out["peak_mib"] = (k / 1024 for k in rss_kib(proc.pid))
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", type=int, default=10_000)
    parser.add_argument("--adds", type=int, default=100, help="single adds timed at full size")
    parser.add_argument("--batch", type=int, default=250, help="variants per add_many while building")
    parser.add_argument("--keep", type=Path, help="build here and keep it (default: a temp dir, removed)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    root = args.keep or Path(tempfile.mkdtemp(prefix="archive-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    path, json_dir = root / "archive", root / "openevolve" / "programs"
    json_dir.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, str, str]] = []
    try:
        archive = Archive.init(path, REPO / "plugins", meta={"scores": {"score": 0.3}})
        write_openevolve_program(json_dir, "v0", {"parent": None, "files": archive.files("v0"), "status": "admitted",
                                                  "meta": archive.get("v0").meta | {"calls": [{"messages": [{"content": ""}] * 2, "response": ""}], "sandbox": {}}})
        git_build, json_build = build(archive, json_dir, args.variants, args.batch, rng)
        n = len(archive)
        console.print(f"built {n} variants in {git_build:.1f} s (git + SQLite) and "
                      f"{json_build:.1f} s (JSON files)")
        rows.append(("build N variants (batched)", f"{git_build:.1f} s", f"{json_build:.1f} s", ""))

        # adding one more variant to a full archive, one at a time (the meta loop's case)
        add_times, json_add_times = [], []
        admitted = [v.id for v in archive.list("admitted", limit=None)][-50:]
        for i in range(args.adds):
            parent = rng.choice(admitted)
            files, meta, status = synthetic_variant(rng, n + i, archive.files(parent), 0.5)
            started = time.perf_counter()
            vid = archive.add(parent=parent, files=files, meta=meta, status=status)
            add_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            write_openevolve_program(json_dir, vid, {"parent": parent, "files": files, "meta": meta, "status": status})
            json_add_times.append(time.perf_counter() - started)
        rows.append(("add one variant (median)", f"{statistics.median(add_times) * 1000:.1f} ms",
                     f"{statistics.median(json_add_times) * 1000:.1f} ms", "< 50 ms"))
        total = len(archive)
        archive.close()

        startup = statistics.median(run_cli("--version") for _ in range(5))
        rows.append(("  for reference: `selfloop --version` (interpreter + CLI start)", f"{startup:.2f} s", "", ""))
        cli_json = statistics.median(run_cli("archive", "list", "--archive", str(path), "--json") for _ in range(5))
        cli_table = statistics.median(run_cli("archive", "list", "--archive", str(path)) for _ in range(5))
        cli_sorted = statistics.median(run_cli("archive", "list", "--archive", str(path), "--sort", "held_out",
                                               "--limit", "20") for _ in range(5))
        rows.append((f"`selfloop archive list --json` ({total} rows, new process)", f"{cli_json:.2f} s", "", "< 1 s"))
        rows.append((f"`selfloop archive list` (table, {total} rows)", f"{cli_table:.2f} s", "", "< 1 s"))
        rows.append(("`selfloop archive list --sort held_out --limit 20`", f"{cli_sorted:.2f} s", "", ""))

        fresh = Archive(path)
        list_s, listed = timed(lambda: [(v.id, v.parent, v.scores) for v in fresh.list()], 5)
        load_s, programs = timed(lambda: load_openevolve(json_dir), 3)
        assert len(listed) == len(programs) == total, (len(listed), len(programs), total)
        rows.append(("list all: id, parent, scores (in-process)", f"{list_s * 1000:.0f} ms",
                     f"{load_s * 1000:.0f} ms (load all files)", ""))
        best_s, best = timed(lambda: fresh.best("held_out"), 5)
        json_best_s, json_best = timed(lambda: max(
            (p for p in load_openevolve(json_dir).values() if p["status"] == "admitted"),
            key=lambda p: p["metrics"].get("held_out", float("-inf"))), 3)
        assert best.scores["held_out"] == json_best["metrics"]["held_out"]
        rows.append(("best admitted by a metric", f"{best_s * 1000:.1f} ms", f"{json_best_s * 1000:.0f} ms", ""))
        some = [f"v{rng.randrange(total)}" for _ in range(20)]
        open_s, _ = timed(lambda: [(fresh.get(v).meta, fresh.files(v)) for v in some], 3)
        json_open_s, _ = timed(lambda: [json.loads((json_dir / f"{v}.json").read_text()) for v in some], 3)
        rows.append(("open one variant: record + files", f"{open_s / 20 * 1000:.1f} ms",
                     f"{json_open_s / 20 * 1000:.2f} ms", ""))
        diff_s, _ = timed(lambda: [fresh.diff(v) for v in some], 3)
        rows.append(("diff a variant against its parent", f"{diff_s / 20 * 1000:.1f} ms", "n/a (no history)", ""))
        rebuild_s, rebuilt = timed(fresh.reindex, 1)
        assert rebuilt == total
        rows.append(("rebuild the index from git alone", f"{rebuild_s:.1f} s", "", ""))
        fresh.close()

        server = measure_server(path, loads=3)
        page = f"{server['page_s']:.2f} s ({server['nodes']} nodes)" if server["page_s"] else "chromium missing"
        rows.append(("browser first page: navigation start to lineage tree painted (median of 3)", page, "", "< 2 s"))
        if server["page_s"]:
            rows.append(("  and to the score chart below it painted too", f"{server['chart_s']:.2f} s", "", ""))
            rows.append(("  the same seen from Playwright (adds its own process round trips)",
                         f"{server['outside_s']:.2f} s", "", ""))
        api = f"{server['api_s'] * 1000:.0f} ms ({server['api_mb']:.1f} MB JSON)"
        rows.append(("  of which / + /api/variants over HTTP", api, "", ""))
        rows.append(("server resident memory (now / peak)", f"{server['rss_mib']:.0f} / {server['peak_mib']:.0f} MiB",
                     "", "< 500 MiB"))

        git_bytes, git_files = du(path), count_files(path)
        json_bytes, json_files = du(json_dir), count_files(json_dir)
        started = time.perf_counter()
        subprocess.run(["git", "-C", str(path), "gc", "--quiet"], check=True)
        gc_s = time.perf_counter() - started
        rows.append(("disk as written (files)", f"{git_bytes / 2**20:.0f} MiB ({git_files} files)",
                     f"{json_bytes / 2**20:.0f} MiB ({json_files} files)", ""))
        rows.append((f"disk after `git gc` ({gc_s:.0f} s)", f"{du(path) / 2**20:.0f} MiB ({count_files(path)} files)",
                     "", ""))
        fsck = subprocess.run(["git", "-C", str(path), "fsck", "--no-dangling"], check=False, capture_output=True,
                              text=True)
        rows.append(("`git fsck` after all of it", "clean" if fsck.returncode == 0 and not fsck.stderr.strip()
                     else f"rc {fsck.returncode}: {fsck.stderr.strip()[:60]}", "", "clean"))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    table = Table(title=f"variant archive at {total} variants ({os.cpu_count()} CPUs)")
    for column in ("measure", "selfloop: git + SQLite", "one JSON file per program (OpenEvolve-style)", "target"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main()
