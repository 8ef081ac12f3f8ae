"""What every model provider shares: checkpoints as Hugging Face directories, memory estimates, and
the few model computations the stages need (teacher-forced log-probabilities, greedy answers).

Building a model is a provider's job (``selfloop.plugins.model``). A provider records itself in the
model's config (``selfloop_model``: its name and options, see ``record_provider``), so a saved
directory says which provider loads it: ``load_policy`` and ``untrained_copy`` work on any
checkpoint without knowing the run's config.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import CheckpointError
from .types import Policy

PEERS_DIR = "peers"  # inside a model directory: the peer models, one directory each
PROVIDER_KEY = "selfloop_model"  # in a model's config: {"name": provider, "options": {...}}
RUNTIME_GIB = 0.7  # the Python/torch runtime itself, beside the model

_saves = 0  # save_policy's counter: a generator caching a loaded copy can tell saves apart


# --- providers ----------------------------------------------------------------------------------

def record_provider(model, name: str, options: dict[str, Any] | None = None) -> None:
    """Note in ``model``'s config which provider built it (saved with it, read by ``load_policy``)."""
    model.config.selfloop_model = {"name": name, "options": dict(options or {})}


def provider_for(directory: str | os.PathLike, *, registry=None):
    """The provider a saved directory names (the default provider when it names none), built from
    ``registry`` (default: the built-in and installed plugins)."""
    from .config import ModelComponent

    record = _read_config(Path(directory)).get(PROVIDER_KEY) or {}
    name = record.get("name") or ModelComponent().name
    return (registry or _default_registry()).create("model", name, record.get("options") or {})


@lru_cache(maxsize=1)
def _default_registry():
    from .registry import load_registry

    return load_registry()


def load_policy(directory: str | os.PathLike, *, registry=None) -> Policy:
    """Load a saved model directory (and its peers) with the provider that saved it."""
    return provider_for(directory, registry=registry).load(Path(directory))


def untrained_copy(policy: Policy, *, seed: int, registry=None) -> Policy:
    """The policy with the model taken away (the judge's ablation): its provider's
    ``untrained_copy`` when it has one, else ``fresh_weights``."""
    from .config import ModelComponent

    record = getattr(policy.model.config, PROVIDER_KEY, None) or {}
    name = record.get("name") or ModelComponent().name
    provider = (registry or _default_registry()).create("model", name, record.get("options") or {})
    own = getattr(provider, "untrained_copy", None)
    return own(policy, seed) if own is not None else fresh_weights(policy, seed=seed)


def fresh_weights(policy: Policy, *, seed: int, prepare: Callable | None = None,
                  **from_config) -> Policy:
    """The same architecture and tokenizer with fresh random weights (peer k from ``seed + k``),
    on the model's device and in its dtype; ``prepare(model)`` reattaches what a provider adds
    (``from_config``: keywords of ``AutoModelForCausalLM.from_config``). Whatever still scores well
    with it does not need the model."""
    import torch
    from transformers import AutoModelForCausalLM

    def fresh(one: Policy, k: int) -> Policy:
        torch.manual_seed(seed + k)
        like = one.model
        model = AutoModelForCausalLM.from_config(like.config, **from_config)
        model.to(device=model_device(like), dtype=next(like.parameters()).dtype)
        if prepare is not None:
            prepare(model)
        return Policy(model=model.eval(), tokenizer=one.tokenizer)

    null = fresh(policy, 0)
    null.peers = [fresh(peer, k) for k, peer in enumerate(policy.peers, start=1)]
    return null


# --- memory -------------------------------------------------------------------------------------

def training_gib(weight_bytes: int, trainable_bytes: int, activation_bytes: int = 0) -> float:
    """Memory to fine-tune a model: its weights, a gradient and two AdamW moments for every
    trainable weight (``trainable_bytes`` at the dtype they train in), activations, the runtime."""
    return (weight_bytes + 3 * trainable_bytes + activation_bytes) / 2**30 + RUNTIME_GIB


def check_memory(needed_gib: float, limit_gib: float, what: str) -> None:
    """Raise CheckpointError when ``needed_gib`` is over ``limit_gib``; ``what`` names the model."""
    if needed_gib > limit_gib:
        raise CheckpointError(
            f"model too large: {what} need about {needed_gib:.1f} GiB to train, over the limit of "
            f"{limit_gib:g} GiB; make the model smaller or raise [model] options.memory_limit_gib"
        )


# --- checkpoints --------------------------------------------------------------------------------

def save_policy(policy: Policy, directory: str | os.PathLike) -> Path:
    """Save as a standard Hugging Face model directory, atomically (a temp dir, then a rename).

    Peers go into ``peers/1``, ``peers/2``... inside it: loaders of the main model ignore them.
    A model that saves no ``config.json`` of its own (a LoRA adapter) gets its config beside it,
    so the directory still names its provider.
    """
    global _saves
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".partial")
    if tmp.exists():
        _remove_tree(tmp)
    tmp.mkdir(parents=True)
    _quiet_hub_bars()
    _save_one(policy, tmp)
    for k, peer in enumerate(policy.peers, start=1):
        _save_one(peer, tmp / PEERS_DIR / str(k))
    _readable_by_all(tmp)  # safetensors writes 0600; the sandbox's payload runs under its own uid
    if directory.exists():
        _remove_tree(directory)
    os.replace(tmp, directory)
    _saves += 1
    policy.path = directory
    for k, peer in enumerate(policy.peers, start=1):
        peer.path = directory / PEERS_DIR / str(k)
    for one in (policy, *policy.peers):
        mark_saved(one.model, one.path)
    return directory


def mark_saved(model, directory: Path) -> None:
    """Note on ``model`` that ``directory`` holds its weights as they are now (``selfloop_saved``:
    the directory, a save count, ``weights_fingerprint``), for copies loaded from disk elsewhere
    (a vLLM engine) to know when to reload."""
    model.selfloop_saved = (str(directory), _saves, weights_fingerprint(model))


def weights_fingerprint(model) -> tuple[float, ...]:
    """A cheap fingerprint of the weights that train: the sums of the first and last trainable
    tensors (every tensor moves in an optimizer step)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad] or list(model.parameters())
    with torch.no_grad():
        return tuple(float(p.detach().float().sum()) for p in (params[0], params[-1]))


def _save_one(policy: Policy, directory: Path) -> None:
    policy.model.save_pretrained(directory)
    policy.tokenizer.save_pretrained(directory)
    if not (directory / "config.json").exists():
        policy.model.config.save_pretrained(directory)


def load_directory(directory: str | os.PathLike, *, provider: str,
                   load_model: Callable[[Path], Any] | None = None,
                   prepare: Callable[[Any], None] | None = None, **model_kwargs) -> Policy:
    """Load a model directory and its peers for ``provider`` (named in errors).

    ``load_model(directory)`` loads one model (default: ``AutoModelForCausalLM.from_pretrained``
    with ``model_kwargs``); ``prepare(model)`` reattaches what the provider adds. A missing or
    corrupt checkpoint is a one-line CheckpointError.
    """
    directory = Path(directory)
    policy = _load_one(directory, provider, load_model, prepare, model_kwargs)
    policy.peers = [_load_one(p, provider, load_model, prepare, model_kwargs) for p in peer_dirs(directory)]
    return policy


def peer_dirs(directory: Path) -> list[Path]:
    """The peer model directories saved inside ``directory``, in order."""
    return sorted((p for p in (Path(directory) / PEERS_DIR).glob("*") if p.name.isdecimal()),
                  key=lambda p: int(p.name))


def weight_bytes(directory: Path) -> int:
    """Bytes of the weight files in a model directory."""
    return sum(p.stat().st_size for p in Path(directory).glob("*.safetensors"))


def _read_config(directory: Path) -> dict:
    if not (directory / "config.json").is_file():
        raise CheckpointError(f"{directory}: not a model directory (no config.json)")
    try:
        return json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{directory}/config.json: corrupt checkpoint: {exc}") from None


def _load_one(directory: Path, provider: str, load_model, prepare, model_kwargs) -> Policy:
    config = _read_config(directory)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_hub_bars()
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, **_tokenizer_kwargs(model_kwargs))
        model = (load_model(directory) if load_model is not None
                 else AutoModelForCausalLM.from_pretrained(directory, **model_kwargs))
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the loader trips on, the files are bad
        raise CheckpointError(f"model {provider!r}: {directory}: corrupt checkpoint "
                              f"({config.get('model_type', '?')}): {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from None
    if prepare is not None:
        prepare(model)
    mark_saved(model, directory)
    return Policy(model=model, tokenizer=tokenizer, path=directory)


def _tokenizer_kwargs(model_kwargs: dict) -> dict:
    return {"trust_remote_code": True} if model_kwargs.get("trust_remote_code") else {}


def _readable_by_all(directory: Path) -> None:
    for path in [directory, *directory.rglob("*")]:
        path.chmod(path.stat().st_mode | (0o755 if path.is_dir() else 0o644))


def _quiet_hub_bars() -> None:
    """Local saves and loads take milliseconds: their progress bars would only clutter ours."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)


# --- computations -------------------------------------------------------------------------------

def model_device(model):
    """The device a model's weights are on (inputs go there)."""
    device = getattr(model, "device", None)
    return device if device is not None else next(model.parameters()).device


def completion_logprobs(policy, prompt_ids: list[list[int]], completion_ids: list[list[int]], *,
                        batch_size: int = 512) -> list[list[float]]:
    """Per-token log-probabilities of each completion (token ids) after its prompt, in eval mode.

    Pairs of equal prompt and completion lengths share a batch, so no padding enters; an empty
    completion gets an empty list. The mask is explicit: without one, transformers may read
    position ids that a provider computes (and that restart inside a sequence) as packed sequences.
    """
    import torch

    model = policy.model
    device = model_device(model)
    out: list[list[float]] = [[] for _ in prompt_ids]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        if c:
            groups.setdefault((len(p), len(c)), []).append(i)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for (plen, _), idx in groups.items():
                for s in range(0, len(idx), batch_size):
                    chunk = idx[s:s + batch_size]
                    ids = torch.tensor([prompt_ids[i] + completion_ids[i] for i in chunk],
                                       dtype=torch.long, device=device)
                    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
                    logp = torch.log_softmax(logits[:, plen - 1:-1].float(), -1)
                    picked = logp.gather(-1, ids[:, plen:, None])[..., 0]
                    for i, row in zip(chunk, picked.tolist()):
                        out[i] = row
    finally:
        model.train(was_training)
    return out


def greedy_answers(policy, generator, prompts, *, max_new_tokens: int, seed: int = 0) -> list[str]:
    """The policy's greedy answer to each prompt, stripped."""
    groups = generator.generate(policy, prompts, n=1, temperature=0.0,
                                max_new_tokens=max_new_tokens, seed=seed)
    return [group[0].strip() for group in groups]
