"""The embedded model: a character-level tokenizer and a stock GPT-2 or Llama built from scratch.

Length generalization depends on positions. The default scheme, ``abacus`` (McLeish et al. 2024),
gives every digit the index it has inside its own number, plus an offset; every other character
gets position 0. The i-th digit of both operands and the (i-1)-th digit of the answer then share a
position, wherever they are in the text, so "add the digits at my position" is one rule for every
length. The default architecture, Llama, feeds these ids to its rotary embeddings, so attention
depends only on differences of ids and the rule needs no position it has not seen. While training,
the offset is drawn at random per sequence (up to ``max_position_offset``): digits move away from
the characters at 0, so the model cannot count digits by their distance to "+" or "=", which is
what breaks at lengths past the trained ones. The range of offsets grows from 0 over the first part
of the base round (the embedded optimizer's ``offset_warmup``): drawn from the full range at once,
some offsets may never be learned. Measured here, 4 layers, width 128, 2000 steps on 1-5 digit
labels (about 4.5 minutes), exact match at 6/7/8/9 digits:

- Llama, offsets up to 20, range grown over the first 40% of steps: 100/100/98/93%;
- the same from the first step: 90/82/75/66% for one seed; for another, training failed at some
  offsets (final loss 0.11) and even 4 digits fell to 10% at those;
- Llama without offsets: 71/4/0/0%; GPT-2 (learned position embeddings), same ids and offsets:
  at most 5% at 6 digits.

With GPT-2 the ids index its learned embeddings (optionally started as sinusoids,
``position_init_scale``). ``learned`` keeps the architecture's own positions.

The scheme lives in the model: ``attach_positions`` installs a forward pre-hook that computes the
position ids from the input ids (also step by step under a KV cache), so ``model(...)``, its
``generate()``, and TRL's trainers all see the same positions without knowing about them. The
scheme is saved in the model's config (``selfloop_positions``); a model directory is a standard
Hugging Face directory, and ``load_policy`` reattaches the hook.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import CheckpointError
from .types import Policy

CHARS = "0123456789+=-*/ abcdefghijklmnopqrstuvwxyz"
PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
POSITION_SCHEMES = ("abacus", "learned")
PEERS_DIR = "peers"  # inside a model directory: the peer models, one directory each


def build_tokenizer():
    """A fast character-level tokenizer with distinct PAD and EOS tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {PAD: 0, EOS: 1, UNK: 2}
    for ch in CHARS:
        vocab.setdefault(ch, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK,
        padding_side="left", model_input_names=["input_ids", "attention_mask"],
    )


def build_model(settings, tokenizer):
    """A freshly initialized stock model from ``ModelSettings``, with its position scheme attached."""
    import torch

    check_memory(settings)
    torch.manual_seed(settings.init_seed)
    config = _model_config(settings, tokenizer)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(config)
    if settings.positions == "abacus" and settings.position_init_scale > 0 and settings.architecture == "gpt2":
        _sinusoidal_init(model.transformer.wpe.weight, settings.position_init_scale)
    attach_positions(model)
    return model.eval()  # like from_pretrained; trainers switch to train mode themselves


def _sinusoidal_init(weight, scale: float) -> None:
    """Start position embeddings as sinusoids (Vaswani et al. 2017).

    Random embeddings make "attend to the position after mine" a separate thing to learn for every
    position; with sinusoids it is one rotation, so random offsets cost almost nothing to learn.
    The embeddings stay trainable, and the architecture stays stock GPT-2.
    """
    import math

    import torch

    positions, dim = weight.shape
    pos = torch.arange(positions, dtype=torch.float)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float) * (-math.log(10000.0) / dim))
    table = torch.zeros(positions, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    with torch.no_grad():
        weight.copy_(table * scale)


def _model_config(settings, tokenizer):
    common = {
        "vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.eos_token_id,
    }
    extra = {"selfloop_positions": settings.positions,
             "selfloop_max_position_offset": settings.max_position_offset,
             "selfloop_inference_offset": settings.inference_offset}
    if settings.architecture == "gpt2":
        from transformers import GPT2Config

        return GPT2Config(
            n_layer=settings.n_layer, n_embd=settings.n_embd, n_head=settings.n_head,
            n_positions=settings.max_positions, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            **common, **extra,
        )
    from transformers import LlamaConfig

    return LlamaConfig(
        num_hidden_layers=settings.n_layer, hidden_size=settings.n_embd,
        num_attention_heads=settings.n_head, num_key_value_heads=settings.n_head,
        intermediate_size=4 * settings.n_embd, max_position_embeddings=settings.max_positions,
        **common, **extra,
    )


def parameter_count(settings, vocab_size: int = len(CHARS) + 3) -> int:
    """Parameters of the model ``settings`` describes (close enough for a memory estimate)."""
    d, layers = settings.n_embd, settings.n_layer
    per_layer = 12 * d * d + 13 * d
    return layers * per_layer + vocab_size * d + settings.max_positions * d + 2 * d


def check_memory(settings) -> None:
    """Raise CheckpointError when training the model would not fit ``memory_limit_gib``.

    Training holds weights, gradients and two AdamW moments (16 bytes per parameter in fp32), and
    activations; the estimate counts a batch of 64 sequences of ``max_positions`` tokens.
    """
    params = parameter_count(settings)
    activations = 64 * settings.max_positions * settings.n_embd * settings.n_layer * 34 * 4
    needed_gib = (16 * params + activations) / 2**30 + 0.7  # + the Python/torch runtime itself
    if needed_gib > settings.memory_limit_gib:
        raise CheckpointError(
            f"model too large: {params / 1e6:.1f}M parameters need about {needed_gib:.1f} GiB to "
            f"train, over the limit of {settings.memory_limit_gib:g} GiB (model.memory_limit_gib); "
            "make the model smaller or raise the limit"
        )


# --- positions ----------------------------------------------------------------------------------

def digit_mask(input_ids, tokenizer_or_model) -> Any:
    """A bool tensor: which ids are digits (ids of "0".."9" are contiguous in the vocabulary)."""
    zero = _digit_zero(tokenizer_or_model)
    return (input_ids >= zero) & (input_ids < zero + 10)


def _digit_zero(obj) -> int:
    if hasattr(obj, "convert_tokens_to_ids"):
        return obj.convert_tokens_to_ids("0")
    return 3  # build_tokenizer's layout: PAD, EOS, UNK, then "0".."9"


def abacus_positions(input_ids, offset, start=None):
    """Position ids: each digit's 1-based index in its number, plus ``offset``; others ``offset``.

    ``start`` continues a sequence (under a KV cache): the position and digit flag of the token
    before ``input_ids``. Returns the ids and the state to continue from.
    """
    import torch

    is_digit = digit_mask(input_ids, None)
    batch, length = input_ids.shape
    positions = torch.empty_like(input_ids)
    if start is None:
        prev_pos = offset.clone()
        prev_digit = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    else:
        prev_pos, prev_digit = start
    other = torch.zeros_like(offset)
    for col in range(length):  # sequences are short: a column loop is cheaper than cumsum tricks
        digit = is_digit[:, col]
        pos = torch.where(digit, torch.where(prev_digit, prev_pos + 1, offset + 1), other)
        positions[:, col] = pos
        prev_pos, prev_digit = pos, digit
    return positions, (prev_pos, prev_digit)


def attach_positions(model) -> None:
    """Install the model's position scheme as a forward pre-hook (idempotent)."""
    if getattr(model.config, "selfloop_positions", "learned") != "abacus":
        return
    if getattr(model, "_selfloop_positions_hook", None) is not None:
        return
    # Trainers may lower this for a while (a curriculum: positions first, then offsets).
    model.selfloop_max_offset = int(getattr(model.config, "selfloop_max_position_offset", 0))
    model.selfloop_inference_offset = int(getattr(model.config, "selfloop_inference_offset", 0))
    limit = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings

    def hook(module, args, kwargs):
        import torch

        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None:
            return None
        past = kwargs.get("past_key_values", kwargs.get("cache"))  # generate() passes it as ``cache``
        continuing = past is not None and past.get_seq_length() > 0
        state = getattr(module, "_selfloop_position_state", None)
        if continuing and state is not None and state[0].shape[0] == input_ids.shape[0]:
            offset, prev = state
            positions, prev = abacus_positions(input_ids, offset, start=prev)
        else:
            batch = input_ids.shape[0]
            # Outside training the offset is the model's inference offset (see position_offset).
            offset = torch.full((batch,), getattr(module, "selfloop_inference_offset", 0),
                                dtype=torch.long, device=input_ids.device)
            max_offset = getattr(module, "selfloop_max_offset", 0)
            if module.training and max_offset > 0:
                longest_run = _longest_digit_run(input_ids)
                room = max(0, min(max_offset, limit - longest_run - 2))
                offset = torch.randint(0, room + 1, (batch,), device=input_ids.device)
            positions, prev = abacus_positions(input_ids, offset)
        if int(positions.max()) >= limit:
            raise CheckpointError(f"a number is too long for the model: position "
                                  f"{int(positions.max())} >= {limit} (model.max_positions)")
        module._selfloop_position_state = (offset, prev)
        kwargs = dict(kwargs)
        kwargs["position_ids"] = positions
        if kwargs.get("attention_mask") is None and len(args) <= 1 and not continuing:
            # Without a mask, transformers reads position ids that restart (at every non-digit) as
            # packed sequences, and each token would attend only within its own number.
            kwargs["attention_mask"] = torch.ones_like(input_ids)
        if args:
            kwargs["input_ids"] = args[0]
            args = args[1:]
        return args, kwargs

    model._selfloop_positions_hook = model.register_forward_pre_hook(hook, with_kwargs=True)


def has_position_offsets(policy) -> bool:
    """Whether the policy's positions take an offset (abacus positions computed by the hook)."""
    model = getattr(policy, "model", None)
    return getattr(model, "_selfloop_positions_hook", None) is not None


@contextmanager
def position_offset(policy, offset: int):
    """Answer with the policy's abacus positions at ``offset``: another view of the same model.

    A model trained at random offsets answers at every offset, but not with the same mistakes
    (measured here at 7 digits: 17% to 86% exact match from one offset to another), so answers
    that agree across several offsets are more often right: a vote with no second model to train.
    """
    model = policy.model
    if not has_position_offsets(policy):
        raise ValueError("position offsets need a model with abacus positions")
    saved = model.selfloop_inference_offset
    model.selfloop_inference_offset = offset
    try:
        yield policy
    finally:
        model.selfloop_inference_offset = saved


def completion_logprobs(policy, prompt_ids: list[list[int]], completion_ids: list[list[int]], *,
                        batch_size: int = 512) -> list[list[float]]:
    """Per-token log-probabilities of each completion (token ids) after its prompt, in eval mode.

    Pairs of equal prompt and completion lengths share a batch, so no padding enters; an empty
    completion gets an empty list. The explicit mask matters: without one, transformers reads
    abacus position ids (restarting at every non-digit) as packed sequences.
    """
    import torch

    model = policy.model
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
                    ids = torch.tensor([prompt_ids[i] + completion_ids[i] for i in chunk], dtype=torch.long)
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


def greedy_across_offsets(policy, generator, prompts, *, views: int, spacing: int,
                          max_new_tokens: int, seed: int = 0) -> list[list[str]]:
    """Each prompt's greedy answers at offsets 0, ``spacing``, ... (``views`` of them); no answers
    when the policy's positions take no offset (a view would only repeat the greedy answer)."""
    answers: list[list[str]] = [[] for _ in prompts]
    if views <= 0 or not has_position_offsets(policy):
        return answers
    for view in range(views):
        with position_offset(policy, view * spacing):
            greedy = greedy_answers(policy, generator, prompts, max_new_tokens=max_new_tokens, seed=seed)
        for answer, one in zip(answers, greedy):
            answer.append(one)
    return answers


def _longest_digit_run(input_ids) -> int:
    positions, _ = abacus_positions(input_ids, input_ids.new_zeros(input_ids.shape[0]))
    return int(positions.max())


# --- checkpoints --------------------------------------------------------------------------------

def new_policy(settings) -> Policy:
    """The base policy: a fresh model from ``settings`` with ``settings.peers`` peers (peer k from
    ``init_seed + k``), or the directory ``settings.path`` names (with the peers saved in it)."""
    if settings.path:
        policy = load_policy(settings.path, memory_limit_gib=settings.memory_limit_gib)
        if len(policy.peers) != settings.peers:
            raise CheckpointError(f"{settings.path} holds {len(policy.peers)} peer models but "
                                  f"model.peers is {settings.peers}; set model.peers to match")
        return policy
    tokenizer = build_tokenizer()
    peers = [Policy(model=build_model(settings.model_copy(update={"init_seed": settings.init_seed + k}),
                                      tokenizer), tokenizer=tokenizer)
             for k in range(1, settings.peers + 1)]
    return Policy(model=build_model(settings, tokenizer), tokenizer=tokenizer, peers=peers)


def untrained_copy(policy: Policy, *, seed: int) -> Policy:
    """The same architecture and tokenizer with fresh random weights, peers included: the model
    taken away (the judge's ablation). Whatever still scores well with it does not need the model."""
    import torch
    from transformers import AutoModelForCausalLM

    def fresh(one: Policy, k: int) -> Policy:
        torch.manual_seed(seed + k)
        model = AutoModelForCausalLM.from_config(one.model.config)
        attach_positions(model)
        return Policy(model=model.eval(), tokenizer=one.tokenizer)

    null = fresh(policy, 0)
    null.peers = [fresh(peer, k) for k, peer in enumerate(policy.peers, start=1)]
    return null


def save_policy(policy: Policy, directory: str | os.PathLike) -> Path:
    """Save as a standard Hugging Face model directory, atomically (a temp dir, then a rename).

    Peers go into ``peers/1``, ``peers/2``... inside it: loaders of the main model ignore them."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".partial")
    if tmp.exists():
        _remove_tree(tmp)
    tmp.mkdir(parents=True)
    _quiet_hub_bars()
    policy.model.save_pretrained(tmp)
    policy.tokenizer.save_pretrained(tmp)
    for k, peer in enumerate(policy.peers, start=1):
        peer.model.save_pretrained(tmp / PEERS_DIR / str(k))
        peer.tokenizer.save_pretrained(tmp / PEERS_DIR / str(k))
    _readable_by_all(tmp)  # safetensors writes 0600; the sandbox's payload runs under its own uid
    if directory.exists():
        _remove_tree(directory)
    os.replace(tmp, directory)
    policy.path = directory
    for k, peer in enumerate(policy.peers, start=1):
        peer.path = directory / PEERS_DIR / str(k)
    return directory


def load_policy(directory: str | os.PathLike, *, memory_limit_gib: float | None = None) -> Policy:
    """Load a model directory and its peers; a missing, corrupt or too large checkpoint is a
    CheckpointError."""
    directory = Path(directory)
    policy = _load_one(directory, memory_limit_gib)
    peer_dirs = sorted((p for p in (directory / PEERS_DIR).glob("*") if p.name.isdigit()),
                       key=lambda p: int(p.name))
    policy.peers = [_load_one(p, memory_limit_gib) for p in peer_dirs]
    return policy


def _load_one(directory: Path, memory_limit_gib: float | None) -> Policy:
    if not (directory / "config.json").is_file():
        raise CheckpointError(f"{directory}: not a model directory (no config.json)")
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{directory}/config.json: corrupt checkpoint: {exc}") from None
    if memory_limit_gib is not None:
        weights = sum(p.stat().st_size for p in directory.glob("*.safetensors"))
        needed = 4 * weights / 2**30 + 0.7
        if needed > memory_limit_gib:
            raise CheckpointError(
                f"{directory}: model too large: {weights / 2**20:.0f} MiB of weights need about "
                f"{needed:.1f} GiB to train, over the limit of {memory_limit_gib:g} GiB"
            )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_hub_bars()
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = AutoModelForCausalLM.from_pretrained(directory)
    except Exception as exc:  # noqa: BLE001 - whatever the loader trips on, the files are bad
        raise CheckpointError(f"{directory}: corrupt checkpoint ({config.get('model_type', '?')}): "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    attach_positions(model)
    return Policy(model=model, tokenizer=tokenizer, path=directory)


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
