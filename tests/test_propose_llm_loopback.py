"""The LLM proposer against a loopback OpenAI-compatible server that answers as real models do:
inspirations, lineage and insights reach the prompt; near-duplicates are refused before
evaluation; the model bandit moves toward the model with the better gain per dollar or token."""

from __future__ import annotations

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from selfloop.core.errors import ProposalError
from selfloop.core.registry import load_registry
from selfloop.core.types import VariantView

FILE = '''from selfloop.core.tunable import tunable

VOTES = tunable(3, low=1, high=9)


def vote(answers):
    return max(set(answers), key=answers.count)
'''
EDITABLE = ["refine/vote.py"]
INSIGHT = "Worked: more votes (+0.2 smoke). Failed: dropping the tie-break (smoke 0.20). Next: weight votes."


def block(search, replace, path="refine/vote.py"):
    return f"{path}\n<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"


def votes(n, comment=""):
    return block("VOTES = tunable(3, low=1, high=9)\n", f"VOTES = tunable({n}, low=1, high=9){comment}\n")


def files(n):
    return {"refine/vote.py": FILE.replace("tunable(3,", f"tunable({n},")}


class Server:
    """POST /v1/chat/completions with chat.completion bodies: id, model, choices, usage."""

    def __init__(self):
        self.requests: list[dict] = []
        self.reply = lambda request: "ok"
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self.send_error(404)
                    return
                outer.requests.append(body)
                text = outer.reply(body)
                prompt = sum(len(m["content"].split()) for m in body["messages"])
                data = json.dumps({
                    "id": f"chatcmpl-{len(outer.requests)}", "object": "chat.completion",
                    "created": int(time.time()), "model": body["model"], "system_fingerprint": "fp_loop",
                    "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                 "message": {"role": "assistant", "content": text, "refusal": None}}],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": len(text.split()),
                              "total_tokens": prompt + len(text.split())},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def prompts(self, kind: str) -> list[str]:
        """The last user message of each request of one kind: insights, diagnose, implement or novelty."""
        return [r["messages"][-1]["content"] for r in self.requests if kind_of(r) == kind]


def kind_of(request) -> str:
    last = request["messages"][-1]["content"]
    if "research notes" in request["messages"][0]["content"]:
        return "insights"
    if last.startswith("Here are the editable files"):
        return "diagnose"
    if last.startswith("Your change is nearly the same"):
        return "novelty"
    return "implement"


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-loopback")
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def proposer(server, model, **options):
    return load_registry(entry_points=False).create(
        "proposer", "llm", {"model": model, "api_base": server.url, "backoff_s": 0, "retries": 0, **options})


def scripted(edit_for, insight=INSIGHT):
    def reply(request):
        kind = kind_of(request)
        if kind == "insights":
            return insight
        if kind == "diagnose":
            return "Ties are frequent; more votes would break them."
        return edit_for(request, kind)
    return reply


PARENT = VariantView(id="v4", files=files(3), scores={"smoke": 0.40, "full": 0.38}, parent="v2",
                     summary="keep three votes", operator="llm:openai/loop-a",
                     feedback="accuracy 0.40 at 6 digits; votes often tie")
V1 = VariantView(id="v1", files=files(3), scores={"smoke": 0.30}, summary="", operator="seed")
V2 = VariantView(id="v2", files=files(3), scores={"smoke": 0.35}, parent="v1", summary="normalize answers",
                 operator="mutation")
V5 = VariantView(id="v5", files=files(5), scores={"smoke": 0.61, "full": 0.58}, parent="v4",
                 summary="raise votes to five", operator="llm:openai/loop-a")
V6 = VariantView(id="v6", files={"refine/vote.py": FILE.replace("max(set(answers)", "min(set(answers)")},
                 scores={"smoke": 0.20}, parent="v4", summary="drop the tie-break", operator="mutation",
                 status="rejected", reasons=["smoke: 0.20 below the threshold 0.30"])
OTHERS = [V5, V2, V1, V6]


def test_prompts_show_inspirations_lineage_and_insights(server):
    server.reply = scripted(lambda request, kind: votes(8))
    p = proposer(server, "openai/loop-a", insights_every=2)
    edit = p.propose(PARENT, editable=EDITABLE, others=OTHERS, rng=random.Random(0))
    assert edit.files == files(8) and edit.meta["operator"] == "llm:openai/loop-a"

    # one cheap call summarized the attempts first, and its insights reached the diagnosis
    insights = server.prompts("insights")
    assert len(insights) == 1 and "drop the tie-break" in insights[0] and "smoke: 0.20 below" in insights[0]
    diagnose = server.prompts("diagnose")[0]
    assert "## Insights from the search so far\n" + INSIGHT in diagnose
    # inspirations: the best admitted variant, as a diff against the parent, with its scores
    assert "### v5 (admitted, smoke 0.610, full 0.580" in diagnose and "raise votes to five" in diagnose
    assert "-VOTES = tunable(3, low=1, high=9)\n+VOTES = tunable(5, low=1, high=9)" in diagnose
    # the lineage, oldest first, and the attempts with how they ended
    lineage = diagnose[diagnose.index("Lineage of v4"):]
    assert lineage.index("- v1 ") < lineage.index("- v2 (from v1, mutation): normalize answers - admitted, smoke 0.350")
    assert "- v6 (from v4, mutation): drop the tie-break - rejected: smoke: 0.20 below the threshold 0.30" in diagnose
    assert edit.meta["insights"] == INSIGHT and edit.meta["inspirations"][0] == "v5"
    assert json.loads(json.dumps(edit.meta)) == edit.meta  # the archive stores it as JSON

    # every call is recorded with the server's token counts (an unpriced model: no cost)
    assert edit.calls[0].response == INSIGHT and len(edit.calls) == 3
    assert all(c.prompt_tokens > 0 and c.cost_usd is None for c in edit.calls)

    # the insights are refreshed every second proposal, from the previous ones
    for i in range(2):
        p.propose(PARENT, editable=EDITABLE, others=OTHERS, rng=random.Random(i))
    insights = server.prompts("insights")
    assert len(insights) == 2 and "Previous insights:\n" + INSIGHT in insights[1]


def test_without_history_the_prompt_has_no_context_sections(server):
    server.reply = scripted(lambda request, kind: votes(8))
    edit = proposer(server, "openai/loop-a").propose(PARENT, editable=EDITABLE, others=[], rng=random.Random(0))
    assert edit.files and server.prompts("insights") == [] and "insights" not in edit.meta
    assert "## History" not in server.prompts("diagnose")[0]


def test_near_duplicate_is_refused_before_evaluation(server):
    tried = VariantView(id="v7", files=files(7), scores={"smoke": 0.30}, parent="v4", summary="seven votes",
                        operator="llm:openai/loop-a", status="rejected", reasons=["smoke: 0.30 below 0.36"])
    # the same change again, only commented differently, both times
    server.reply = scripted(lambda request, kind: votes(7, "  # more votes"))
    p = proposer(server, "openai/loop-a", insights_every=0)
    with pytest.raises(ProposalError, match=r"near-duplicate of v7 \(similarity 1.00; v7 was rejected: smoke: "
                                            r"0.30 below 0.36\), refused before evaluation") as info:
        p.propose(PARENT, editable=EDITABLE, others=[tried, V6], rng=random.Random(0))
    assert "\n" not in str(info.value)
    novelty = server.prompts("novelty")
    assert len(novelty) == 1 and "v7" in novelty[0] and "rejected: smoke: 0.30 below 0.36" in novelty[0]
    assert len(info.value.calls) == 3  # diagnosis, the duplicate, the retry: all count for the budget

    # asked once for a different change, the model makes one: it is proposed, with the similarity
    server.requests.clear()
    server.reply = scripted(lambda request, kind: votes(9) if kind == "novelty" else votes(7))
    edit = p.propose(PARENT, editable=EDITABLE, others=[tried, V6], rng=random.Random(0))
    assert edit.files == files(9)
    assert edit.meta["novelty"]["retried"] is True and edit.meta["novelty"]["closest"] == "v7"


def test_a_different_value_of_the_same_knob_is_not_a_duplicate(server):
    tried = VariantView(id="v7", files=files(7), scores={"smoke": 0.30}, parent="v4", summary="seven votes",
                        status="rejected", reasons=["smoke: low"])
    server.reply = scripted(lambda request, kind: votes(5))
    edit = proposer(server, "openai/loop-a", insights_every=0).propose(
        PARENT, editable=EDITABLE, others=[tried], rng=random.Random(0))
    assert edit.meta["novelty"]["closest"] == "v7" and edit.meta["novelty"]["similarity"] > 0.9
    assert server.prompts("novelty") == []


def run_rounds(server, p, gain, n):
    """``n`` proposals, each child archived as a view whose visible score is the parent's plus its
    model's gain; returns the models chosen, in order."""
    others, chosen = [], []
    for i in range(n):
        value = [4, 5, 6, 7, 8, 9, 1, 2][i % 8]  # never 3, the parent's: every edit changes something
        server.reply = scripted(lambda request, kind, value=value: votes(value))
        edit = p.propose(PARENT, editable=EDITABLE, others=others[-12:], rng=random.Random(i))
        model = edit.meta["model"]
        chosen.append(model)
        others.append(VariantView(id=f"v{10 + i}", files=files(value), parent="v4", summary=edit.summary,
                                  scores={"smoke": PARENT.scores["smoke"] + gain[model]},
                                  operator=edit.meta["operator"]))
    return chosen, edit


def test_bandit_moves_to_the_model_with_the_larger_gain_per_token(server):
    models = ["openai/loop-a", "openai/loop-b"]
    p = proposer(server, models, insights_every=0, novelty_threshold=2)
    chosen, edit = run_rounds(server, p, {"openai/loop-a": 0.0, "openai/loop-b": 0.2}, 16)
    assert set(chosen[:2]) == set(models)  # each tried first
    assert chosen[8:].count("openai/loop-b") >= 6
    served = [r["model"] for r in server.requests if kind_of(r) == "diagnose"]
    assert served == [m.removeprefix("openai/") for m in chosen]  # the chosen model answered
    arms = edit.meta["bandit"]["arms"]
    assert edit.meta["bandit"]["unit"] == "tokens"  # unpriced models: gain per token
    assert arms["openai/loop-b"]["mean_gain"] == pytest.approx(0.2) and arms["openai/loop-a"]["mean_gain"] == 0


def test_bandit_prefers_the_cheaper_model_for_the_same_gain(server):
    models = ["openai/gpt-4o", "openai/gpt-4o-mini"]  # priced by litellm: gain per dollar
    p = proposer(server, models, insights_every=0, novelty_threshold=2)
    chosen, edit = run_rounds(server, p, {m: 0.1 for m in models}, 14)
    assert edit.meta["bandit"]["unit"] == "usd"
    arms = edit.meta["bandit"]["arms"]
    assert arms["openai/gpt-4o"]["cost_per_proposal"] > 5 * arms["openai/gpt-4o-mini"]["cost_per_proposal"]
    assert chosen[6:].count("openai/gpt-4o-mini") >= 6
    assert all(c.cost_usd and c.cost_usd > 0 for c in edit.calls)


def test_unknown_provider_and_no_model_are_one_line_errors():
    registry = load_registry(entry_points=False)
    with pytest.raises(Exception, match="unknown provider 'nosuch'") as info:
        registry.create("proposer", "llm", {"model": ["openai/gpt-4o-mini", "nosuch/model"]})
    assert "\n" not in str(info.value)
    with pytest.raises(Exception, match="needs a model"):
        registry.create("proposer", "llm", {"model": []})
