"""What runs inside the sandbox when a variant's own meta-agent acts:
``python -m selfloop.core.meta_payload``.

When evolve targets the proposer or the parent selector, a variant's edited copy of either is code
the loop has not vetted, so it runs here, like every other variant code: the variant's plugin tree
at ``$SELFLOOP_CODE``, the job at ``$SELFLOOP_INPUT_JOB``. The job names the role:

- ``propose``: the variant's proposer (the config's ``[proposer]`` name, from the variant's tree)
  proposes one edit of ``parent`` (a ``VariantView`` as a dict) given ``editable`` and ``others``;
  the result is the ``Edit`` (files, summary, proposer, meta), or ``failed``.
- ``choose``: the variant's parent selector picks ``k`` parents among ``variants``
  (``VariantSummary`` dicts); the result is ``chosen``, or ``failed``.

The host checks what comes back (``selfloop.core.meta``) and falls back to the seed's proposer or
parent selector whenever this fails, so a broken meta-agent never stops the loop.
"""

from __future__ import annotations

import json
import os
import random
import sys
import traceback
from pathlib import Path

from .judge_payload import resolve_inputs


def run(job: dict, code: Path) -> dict:
    from .config import RunConfig
    from .registry import load_registry
    from .types import VariantSummary, VariantView

    user_dirs = [os.environ[f"SELFLOOP_INPUT_{name.upper()}"] for name in job.get("plugins_inputs", [])]
    registry = load_registry([code, *user_dirs])
    config = RunConfig.model_validate(resolve_inputs(job["config"]))
    rng = random.Random(job["seed"])
    if job["role"] == "propose":
        proposer = registry.create("proposer", config.proposer.name, config.proposer.options)
        edit = proposer.propose(VariantView(**job["parent"]), editable=job["editable"],
                                others=[VariantView(**o) for o in job["others"]], rng=rng)
        return {"edit": {"files": dict(edit.files), "summary": str(edit.summary),
                         "proposer": str(edit.proposer), "meta": _plain(edit.meta)}}
    selector = registry.create("parent_selector", config.parent_selector.name, config.parent_selector.options)
    chosen = selector.choose([VariantSummary(**v) for v in job["variants"]], int(job["k"]), rng)
    return {"chosen": [str(c) for c in chosen]}


def _plain(value):
    """``value`` as JSON can hold it (what does not fit becomes its text)."""
    return json.loads(json.dumps(value, default=str))


def main() -> int:
    job = json.loads(Path(os.environ["SELFLOOP_INPUT_JOB"]).read_text())
    try:
        result = run(job, Path(os.environ["SELFLOOP_CODE"]))
    except Exception as exc:  # the variant's meta-agent raised: that is what the host is told
        print(traceback.format_exc(limit=-3), file=sys.stderr)
        result = {"failed": f"{type(exc).__name__}: {str(exc)[:300]}"}
    Path(os.environ["SELFLOOP_RESULT"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
