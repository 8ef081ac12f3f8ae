"""Self-reference: a variant's own proposer and parent selector, run in the sandbox.

When evolve targets ``proposer`` or ``parent_selector``, their files are part of every variant's
tree, and the loop edits them like any plugin. Who then acts:

- **Proposals.** A variant's children are proposed by the proposer in its own tree (as in the
  Darwin Gödel Machine, where each agent builds its own children): the installed one when the
  tree's copy is the seed's; the installed one with the tree's prompt templates when those are all
  it changed (an LLM proposer's prompts are data: read, never run, and the LLM stays reachable);
  else the tree's copy, in the sandbox (``meta_payload``). So an edited
  proposer's worth is what its descendants achieve, its clade (``selfloop.core.clades``), and the
  ``hgm`` parent selector, which samples parents by their clades, hands the next iterations to the
  proposers whose clades do well.
- **Parent selection.** Among the round's admitted variants whose parent selector differs from the
  seed's, the one whose clade has the best success rate chooses a batch's parents once that rate
  beats the seed variant's clade's (``active_parent_selector``).

The seed's proposer and parent selector are the fallback: a tree's copy that raises, times out,
returns nothing or returns what does not fit (paths outside the editable files, parents not
among the candidates) is recorded, and the seed's acts instead. The loop never stops for it.

An edit that changes only these files changes nothing the lifecycle runs: it is admitted when its
copy works once in the sandbox (``check``), and its scores are its parent's, marked inherited.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from .clades import clades
from .errors import ProposalError, SelfloopError
from .types import Edit, VariantSummary, VariantView
from .validate import mount_option_paths, run_payload

MIN_CLADE = 3  # members a parent selector's clade needs before its rate can win


def meta_paths(file_kinds: dict[str, list[str]], editable: Sequence[str], kind: str) -> list[str]:
    """The editable files that define components of ``kind``."""
    return sorted(p for p in editable if kind in file_kinds.get(p, []))


def own_copy(files: dict[str, str], seed_files: dict[str, str], paths: Sequence[str]) -> bool:
    """Whether a tree's copy of ``paths`` differs from the seed's."""
    return any(files.get(p) != seed_files.get(p) for p in paths)


def prompt_edits(tree: str, seed: str, names) -> dict[str, str] | None:
    """The prompt templates (module-level string constants named in ``names``) a tree's copy of a
    proposer file sets, when they are all it changed from the seed's; None when anything else
    differs (or it does not parse). Read as data: nothing of the tree's runs."""
    import ast

    def split(text):
        module = ast.parse(text)
        prompts, rest = {}, []
        for node in module.body:
            target = node.targets[0].id if (isinstance(node, ast.Assign) and len(node.targets) == 1
                                            and isinstance(node.targets[0], ast.Name)) else None
            if target in names and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                prompts[target] = node.value.value
            else:
                rest.append(ast.dump(node))
        return prompts, rest

    try:
        (mine, my_rest), (theirs, their_rest) = split(tree), split(seed)
    except SyntaxError:
        return None
    if my_rest != their_rest or set(mine) != set(theirs):
        return None
    return {k: v for k, v in mine.items() if theirs.get(k) != v}


def with_tree_prompts(proposer, files: dict[str, str], seed_files: dict[str, str], paths: Sequence[str],
                      variant: str):
    """The installed proposer with a tree's edited prompts (a copy sharing its state), when prompts
    are all the tree changed in ``paths`` and the proposer has ``prompts``; else None."""
    import copy

    base = getattr(proposer, "prompts", None)
    if not isinstance(base, dict):
        return None
    edited: dict[str, str] = {}
    for path in paths:
        if files.get(path) == seed_files.get(path):
            continue
        if files.get(path) is None or seed_files.get(path) is None:
            return None
        found = prompt_edits(files[path], seed_files[path], set(base))
        if found is None:
            return None
        edited.update(found)
    clone = copy.copy(proposer)
    clone.prompts = {**base, **edited}
    clone.prompts_from = variant
    return clone


def prompt_problems(prompted, seed_prompts: dict[str, str]) -> list[str]:
    """Why a tree's edited prompts would not fill in: a field the seed's template does not have
    (the proposer fills only those), or a template that does not parse."""
    from string import Formatter

    def fields(text):
        return {name.split(".")[0].split("[")[0] for _, name, _, _ in Formatter().parse(text) if name is not None}

    problems = []
    for name, text in prompted.prompts.items():
        try:
            extra = fields(text) - fields(seed_prompts.get(name, ""))
        except ValueError as exc:
            problems.append(f"meta: prompt {name} does not parse as a template: {exc}")
            continue
        if extra:
            problems.append(f"meta: prompt {name} uses {', '.join(sorted(extra))}, which the proposer "
                            "does not fill in")
    return problems


class TreeRunner:
    """Runs the meta payload over one variant's tree in the sandbox."""

    def __init__(self, files: dict[str, str], variant: str, *, sandbox, config, timeout_s: float | None,
                 plugins_dirs: Sequence[str | Path] = ()):
        self.files, self.variant, self.sandbox, self.timeout_s = files, variant, sandbox, timeout_s
        self.job_config, self.path_inputs = mount_option_paths(config.model_dump(mode="json"))
        self.plugins_inputs = {f"plugins{k}": Path(d).resolve() for k, d in enumerate(plugins_dirs)}

    def run(self, role: str, seed: int, **job) -> dict:
        """The payload's result; SelfloopError (one line) when it failed."""
        job = {"payload": "meta", "role": role, "config": self.job_config, "seed": seed,
               "plugins_inputs": sorted(self.plugins_inputs), **job}
        result = run_payload(self.sandbox, self.files, job, {**self.plugins_inputs, **self.path_inputs},
                             self.timeout_s)
        what = "proposer" if role == "propose" else "parent selector"
        if not result.ok:
            raise SelfloopError(f"{self.variant}'s {what}: sandbox {result.status}: {result.reason or 'no result'}")
        payload = result.result if isinstance(result.result, dict) else {}
        if payload.get("failed"):
            raise SelfloopError(f"{self.variant}'s {what} raised {payload['failed']}")
        return payload


class TreeProposer:
    """A variant's own proposer, run in the sandbox; raises ProposalError when it fails."""

    def __init__(self, runner: TreeRunner):
        self.runner = runner
        self.name = f"proposer of {runner.variant}"

    def propose(self, parent: VariantView, *, editable: Sequence[str], others: Sequence[VariantView],
                rng) -> Edit:
        try:
            out = self.runner.run("propose", rng.randrange(2**31), parent=asdict(parent),
                                  editable=list(editable), others=[asdict(o) for o in others])
        except SelfloopError as exc:
            raise ProposalError(str(exc)) from None
        edit = out.get("edit")
        files = edit.get("files") if isinstance(edit, dict) else None
        if not isinstance(files, dict) or not files or not all(
                isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in files.items()):
            raise ProposalError(f"{self.runner.variant}'s proposer returned no edit")
        meta = edit.get("meta") if isinstance(edit.get("meta"), dict) else {}
        return Edit(files=files, summary=str(edit.get("summary") or "edit")[:500],
                    proposer=str(edit.get("proposer") or "proposer"),
                    meta={**meta, "proposed_by": self.runner.variant})


class TreeParentSelector:
    """A variant's own parent selector, run in the sandbox; raises SelfloopError when it fails."""

    def __init__(self, runner: TreeRunner):
        self.runner = runner
        self.name = f"parent selector of {runner.variant}"

    def choose(self, variants: Sequence[VariantSummary], k: int, rng) -> list[str]:
        out = self.runner.run("choose", rng.randrange(2**31), variants=[asdict(v) for v in variants], k=k)
        chosen = out.get("chosen")
        allowed = {v.id for v in variants if v.admitted and v.score is not None}
        if not isinstance(chosen, list) or len(chosen) < k or not set(chosen) <= allowed:
            raise SelfloopError(f"{self.runner.variant}'s parent selector chose {chosen!r:.200}, not {k} "
                                "of the admitted candidates")
        return [str(c) for c in chosen[:k]]


def check(runner: TreeRunner, kinds: Sequence[str], view: VariantView, editable: Sequence[str],
          variants: Sequence[VariantSummary], seed: int) -> list[str]:
    """Why a tree's edited meta-agent does not work (empty when it does): its proposer proposes one
    edit of its own tree, its parent selector chooses one parent, in the sandbox."""
    import random

    problems = []
    rng = random.Random(seed)
    if "proposer" in kinds:
        try:
            TreeProposer(runner).propose(view, editable=editable, others=[], rng=rng)
        except ProposalError as exc:
            problems.append(f"meta: {exc}")
    if "parent_selector" in kinds and variants:
        try:
            TreeParentSelector(runner).choose(variants, 1, rng)
        except SelfloopError as exc:
            problems.append(f"meta: {exc}")
    return problems


def active_parent_selector(summaries: Sequence[VariantSummary], carriers: Sequence[str],
                           seed_variant: str) -> str | None:
    """The variant whose parent selector chooses next: among ``carriers`` (admitted variants with
    their own copy), the one whose clade succeeds most often, once its clade has ``MIN_CLADE``
    members and its rate beats the seed variant's clade's; else None (the seed's chooses)."""
    found = clades(summaries)
    base = found.get(seed_variant)
    best = max((c for c in carriers if c in found and found[c].members >= MIN_CLADE),
               key=lambda c: (found[c].rate, c), default=None)
    if best is None or (base is not None and found[best].rate <= base.rate):
        return None
    return best
