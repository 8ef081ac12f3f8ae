"""A pretrained causal LM from a local directory (or a hub id, where a hub is reachable).

```toml
[model]
name = "pretrained"
options = { path = "models/my-qwen", dtype = "bfloat16" }
```

It loads through ``AutoModelForCausalLM``/``AutoTokenizer`` in ``dtype`` on ``device`` ("auto": CUDA
when present, else the CPU), optionally with a LoRA ``adapter`` (peft): new, as
``{r = 8, alpha = 16, target_modules = ["q_proj", "v_proj"]}``, or the path of a saved one.
Checkpoints of an adapter hold the adapter (peft's directory) and name the base model; the base
must stay where it was. A tokenizer without a pad token pads with EOS, on the left.

Peers (``peers``) are copies of the same weights: they start equal and part ways as each trains
with its own seed. The memory check counts the weights in ``dtype``, plus a gradient and two AdamW
moments for what trains (every weight, or only the adapter's, in fp32), not activations; the
limit defaults to the device's memory (``memory_limit_gib`` overrides it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from selfloop.core.config import parse_options
from selfloop.core.errors import CheckpointError, ConfigError
from selfloop.core.hookspecs import hookimpl
from selfloop.core.models import (
    check_memory,
    fresh_weights,
    load_directory,
    peer_dirs,
    record_provider,
    training_gib,
)
from selfloop.core.types import Policy

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
ADAPTER_CONFIG = "adapter_config.json"


class LoraSettings(BaseModel):
    """A new LoRA adapter (peft's ``LoraConfig``)."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(8, ge=1)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | str = "all-linear"


class PretrainedSettings(BaseModel):
    """The options of ``[model] name = "pretrained"``."""

    model_config = ConfigDict(extra="forbid")

    path: str
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"  # "auto": cuda when present, else cpu; or "cpu", "cuda", "cuda:1", ...
    trust_remote_code: bool = False
    adapter: LoraSettings | str | None = None  # a new LoRA adapter, or a saved adapter's path
    peers: int = Field(0, ge=0, le=8)  # copies of the same weights, trained with other seeds
    memory_limit_gib: float | None = Field(None, gt=0)  # None: the device's memory


class Pretrained:
    """Loads a Hugging Face causal LM (and its peers and adapter); renders chat messages."""

    OPTIONS = PretrainedSettings  # its options, as `selfloop plugins --options` lists them

    def __init__(self, **options):
        self.settings = parse_options(PretrainedSettings, options, "model 'pretrained'")
        self._tokenizer = None  # the tokenizer render_messages uses (the loaded policy's, once loaded)

    # --- the provider -------------------------------------------------------------------------

    def create(self) -> Policy:
        s = self.settings
        self._check_memory(self._config(s.path), s.path, copies=1 + s.peers)
        tokenizer = self._load_tokenizer(s.path)
        policies = [Policy(model=self._new_model(), tokenizer=tokenizer) for _ in range(1 + s.peers)]
        policy, policy.peers = policies[0], policies[1:]
        self._tokenizer = tokenizer
        return policy

    def load(self, directory: Path) -> Policy:
        directory = Path(directory)
        base = self._base_of(directory)
        self._check_memory(self._config(base or directory), directory,
                           copies=1 + len(peer_dirs(directory)), adapter_dir=directory if base else None)
        policy = load_directory(directory, provider="pretrained", load_model=self._load_saved)
        for one in (policy, *policy.peers):
            _prepare_tokenizer(one.tokenizer)
        self._tokenizer = policy.tokenizer
        return policy

    def untrained_copy(self, policy: Policy, seed: int) -> Policy:
        return fresh_weights(policy, seed=seed, trust_remote_code=self.settings.trust_remote_code)

    def render_messages(self, messages: list[dict]) -> str:
        """The chat template's text for ``messages``, ending where the assistant's answer starts."""
        tokenizer = self._tokenizer or self._load_tokenizer(self.settings.path)
        self._tokenizer = tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(f"model 'pretrained': {tokenizer.name_or_path}: the tokenizer has no "
                              "chat_template; add one to its tokenizer_config.json (or a "
                              "chat_template.jinja), or give the task plain prompts")
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def describe(self) -> str:
        s = self.settings
        adapter = "" if s.adapter is None else (
            f", LoRA r={s.adapter.r}" if isinstance(s.adapter, LoraSettings) else f", adapter {s.adapter}")
        return f"pretrained {s.path} ({s.dtype}, {self.device}{adapter}), {s.peers} peers"

    # --- loading -------------------------------------------------------------------------------

    @property
    def device(self) -> str:
        if self.settings.device != "auto":
            return self.settings.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def _torch_dtype(self):
        import torch

        return "auto" if self.settings.dtype == "auto" else getattr(torch, self.settings.dtype)

    def _from_pretrained(self, source: str | Path):
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging

        logging.disable_progress_bar()  # a local load takes seconds: its bar would clutter ours
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=self._torch_dtype(), trust_remote_code=self.settings.trust_remote_code)
        return model.to(self.device).eval()

    def _new_model(self):
        """The base model from ``path``, with the configured adapter (new or saved)."""
        s = self.settings
        try:
            model = self._from_pretrained(s.path)
        except Exception as exc:  # noqa: BLE001 - whatever the loader trips on, the path is bad
            raise _load_error(s.path, exc) from None
        if isinstance(s.adapter, LoraSettings):
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(
                r=s.adapter.r, lora_alpha=s.adapter.alpha, lora_dropout=s.adapter.dropout,
                target_modules=s.adapter.target_modules, task_type="CAUSAL_LM"))
        elif isinstance(s.adapter, str):
            model = self._with_adapter(model, s.adapter)
        record_provider(model, "pretrained", s.model_dump(mode="json"))
        return model

    def _load_saved(self, directory: Path):
        """One saved model: its full weights, or its adapter on the base model it names."""
        base = self._base_of(directory)
        if base is None:
            return self._from_pretrained(directory)
        try:
            model = self._from_pretrained(base)
        except Exception as exc:  # noqa: BLE001
            raise _load_error(base, exc, f"the base model of the adapter in {directory}") from None
        return self._with_adapter(model, directory)

    @staticmethod
    def _with_adapter(model, adapter: str | Path):
        from peft import PeftModel

        try:
            return PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
        except Exception as exc:  # noqa: BLE001
            raise _load_error(adapter, exc, "the adapter") from None

    @staticmethod
    def _base_of(directory: Path) -> str | None:
        """The base model a saved adapter directory names (None: full weights)."""
        file = Path(directory) / ADAPTER_CONFIG
        if not file.is_file():
            return None
        try:
            return json.loads(file.read_text())["base_model_name_or_path"]
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"model 'pretrained': {file}: not a peft adapter config: {exc}") from None

    def _load_tokenizer(self, source):
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=self.settings.trust_remote_code)
        except Exception as exc:  # noqa: BLE001
            raise _load_error(source, exc, "its tokenizer") from None
        return _prepare_tokenizer(tokenizer)

    def _config(self, source):
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(source, trust_remote_code=self.settings.trust_remote_code)
        except Exception as exc:  # noqa: BLE001
            raise _load_error(source, exc) from None

    # --- memory -------------------------------------------------------------------------------

    def _check_memory(self, config, where, *, copies: int, adapter_dir: Path | None = None) -> None:
        """Refuse what would not fit: one model trained, the other copies (peers) held beside it."""
        params, lora = _parameter_counts(config, self.settings)
        dtype = self.settings.dtype if self.settings.dtype != "auto" else _config_dtype(config)
        weights = params * DTYPE_BYTES.get(dtype, 4)
        if adapter_dir is not None:
            trainable = 4 * sum(p.stat().st_size for p in adapter_dir.glob("adapter_model*"))
        elif self.settings.adapter is not None:
            trainable = 4 * lora  # peft trains adapters in fp32
        else:
            trainable = weights
        needed = training_gib(weights * copies, trainable)
        check_memory(needed, self.settings.memory_limit_gib or device_memory_gib(self.device),
                     f"{where}: {params / 1e6:.1f}M parameters in {dtype} "
                     f"({'adapter' if trainable != weights else 'full fine-tune'}, {copies} copies)")


def _prepare_tokenizer(tokenizer):
    """Pad with EOS where there is no pad token; pad on the left (for generation)."""
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def _config_dtype(config) -> str:
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    name = str(dtype).removeprefix("torch.") if dtype is not None else "float32"
    return name if name in DTYPE_BYTES else "float32"


def _parameter_counts(config, settings: PretrainedSettings) -> tuple[int, int]:
    """The model's parameters, and those a new LoRA adapter adds, counted on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=settings.trust_remote_code)
    params = sum(p.numel() for p in model.parameters())
    lora = 0
    if isinstance(settings.adapter, LoraSettings):
        targets = settings.adapter.target_modules
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and (
                    (targets == "all-linear" and module is not model.get_output_embeddings())
                    or (isinstance(targets, list) and name.rsplit(".", 1)[-1] in targets)):
                lora += settings.adapter.r * (module.in_features + module.out_features)
    return params, lora


def device_memory_gib(device: str) -> float:
    """The memory of ``device``: a CUDA device's own, else the machine's."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**30
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def _load_error(source, exc: Exception, what: str = "") -> CheckpointError:
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return CheckpointError(f"model 'pretrained': {source}{f' ({what})' if what else ''} does not "
                           f"load: {type(exc).__name__}: {first}")


@hookimpl(trylast=True)
def register_model(register):
    register("pretrained", Pretrained,
             description="a Hugging Face causal LM from a directory or hub id (dtype, device, LoRA)")
