"""`selfloop evolve` with two `--model`s against the loopback server: the llm proposer runs in the real
loop, both models write variants, later prompts carry the history, and the archive names each model."""

from __future__ import annotations

import itertools
import json
import re
import threading

import pytest
from test_evolve_cli import TINY
from test_propose_llm_loopback import Server, kind_of


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


KNOB = re.compile(r"^[A-Z_]+ = tunable\((?P<v>\d+(?:\.\d+)?), low=[-\d.]+, high=(?P<hi>[-\d.]+)\).*$", re.MULTILINE)


def bump_a_knob():
    """A model that changes one numeric tunable of a shown file, a different one each time."""
    counter, lock = itertools.count(), threading.Lock()

    def reply(request):
        with lock:
            k = next(counter)
        kind = kind_of(request)
        if kind == "insights":
            return "Worked: nothing yet. Failed: see the reasons. Next: tune another knob."
        if kind == "diagnose":
            return f"Tune a knob ({k})."
        shown = request["messages"][1]["content"]
        knobs = [(path, m) for path, text in re.findall(r"^### (\S+\.py)\n```python\n(.*?)```", shown, re.DOTALL | re.MULTILINE)
                 for m in KNOB.finditer(text)]
        path, m = knobs[k % len(knobs)]
        value = m["v"]
        if "." in value:
            new = str(round(float(value) * 0.9, 4))
        else:
            new = str(int(value) + 1 if int(value) < float(m["hi"]) else int(value) - 1)
        line = m.group(0)
        return (f"{path}\n<<<<<<< SEARCH\n{line}\n=======\n"
                f"{line.replace('(' + value + ',', '(' + new + ',', 1)}\n>>>>>>> REPLACE\n")

    return reply


@pytest.mark.slow
def test_evolve_with_two_models_against_the_loopback_server(run_selfloop, tmp_path, server):
    server.reply = bump_a_knob()
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    archive = tmp_path / "A"
    result = run_selfloop("evolve", "--config", config, "--iterations", "4", "--workers", "2",
                          "--model", "openai/loop-a", "--model", "openai/loop-b", "--api-base", server.url,
                          "--archive", archive, env={"SELFLOOP_LLM_MODEL": None, "OPENAI_API_KEY": "sk-loopback"},
                          timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "proposer: llm (openai/loop-a, openai/loop-b)" in result.stdout
    diagnosed = [r for r in server.requests if kind_of(r) == "diagnose"]
    assert {r["model"] for r in diagnosed} == {"loop-a", "loop-b"}  # the bandit tried both
    # the second batch's prompts show the first batch's attempts, and insights were written
    assert any("## History: the lineage and the latest attempts" in r["messages"][1]["content"] for r in diagnosed)
    assert any(kind_of(r) == "insights" for r in server.requests)
    variants = json.loads(run_selfloop("archive", "list", "--archive", archive, "--json").stdout)
    operators = {v["operator"] or "" for v in variants}
    assert operators & {"llm:openai/loop-a", "llm:openai/loop-b"}, operators
    shown = json.loads(run_selfloop("archive", "show", next(v["id"] for v in variants if (v["operator"] or "").startswith("llm:")),
                                    "--archive", archive, "--json").stdout)
    assert shown["meta"]["model"] in ("openai/loop-a", "openai/loop-b") and "arms" in shown["meta"]["bandit"]
