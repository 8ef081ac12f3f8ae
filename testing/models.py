"""Tiny models to test with, built on the spot: no download, seconds on a CPU."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
          " + '<|im_end|>' + '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
WORDS = ("the", "answer", "is", "what", "plus", "minus", "times", "sum", "of", "and", "then",
         "has", "apples", "pears", "each", "left", "gives", "total", "how", "many", "step",
         "first", "next", "so", "adds", "takes", "away", "number", "result", "think")


def tiny_embedded_policy(**options):
    """A tiny embedded policy (one layer, width 32; ``options`` override the embedded model's)."""
    from selfloop.plugins.model.embedded import Embedded

    return Embedded(**{"n_layer": 1, "n_embd": 32, "n_head": 2, "max_positions": 32,
                       "max_position_offset": 4, **options}).create()


def corpus(lines: int = 3000, seed: int = 0) -> list[str]:
    """Text like a small task's: digits, arithmetic, short word problems, chat turns."""
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        a, b = rng.randrange(1000), rng.randrange(1000)
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(3, 9)))
        out += [f"{a} + {b} = {a + b}", f"What is {a} plus {b}? {words} #### {a + b}",
                f"{IM_START}user\n{words} {a}{IM_END}\n{IM_START}assistant\n{b}{IM_END}\n"]
    return out


def tiny_bpe_model_dir(path: str | Path, *, architecture: Literal["qwen2", "llama"] = "qwen2",
                       chat_template: bool = True, vocab_size: int = 400, hidden_size: int = 48,
                       layers: int = 2, seed: int = 0) -> Path:
    """Save a random-weight Qwen2- or Llama-shaped model with a byte-level BPE tokenizer trained
    here on ``corpus()`` to ``path``, and return it. EOS is ``<|im_end|>`` (the end of a chat
    turn), padding ``<|endoftext|>``; the Llama one also puts ``<|endoftext|>`` first as BOS, in
    encodings with special tokens and in its chat template."""
    import torch
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging

    logging.disable_progress_bar()
    path = Path(path)
    specials = [ENDOFTEXT, IM_START, IM_END]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(corpus(seed=seed), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    llama = architecture == "llama"
    if llama:
        bos = core.token_to_id(ENDOFTEXT)
        core.post_processor = processors.TemplateProcessing(
            single=f"{ENDOFTEXT} $A", pair=f"{ENDOFTEXT} $A {ENDOFTEXT} $B", special_tokens=[(ENDOFTEXT, bos)])
    else:
        core.post_processor = processors.ByteLevel(trim_offsets=False)
    template = ("{{ bos_token }}" + CHATML) if llama else CHATML
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token=IM_END, pad_token=ENDOFTEXT,
        bos_token=ENDOFTEXT if llama else None, padding_side="left",
        chat_template=template if chat_template else None,
        model_input_names=["input_ids", "attention_mask"])
    ids = {"vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id,
           "bos_token_id": tokenizer.bos_token_id if llama else None}
    shape = {"hidden_size": hidden_size, "intermediate_size": 2 * hidden_size,
             "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2,
             "max_position_embeddings": 512, "tie_word_embeddings": True}
    if llama:
        from transformers import LlamaConfig

        config = LlamaConfig(**shape, **ids)
    else:
        from transformers import Qwen2Config

        config = Qwen2Config(**shape, **ids)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
