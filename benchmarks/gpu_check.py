"""One GRO round on a GPU: the smoke config, shortened, with the model on the device.

    .venv/bin/python benchmarks/gpu_check.py                      # cuda when present
    .venv/bin/python benchmarks/gpu_check.py --device cpu         # the same on the CPU
    .venv/bin/python benchmarks/gpu_check.py --model embedded --optimizer rejection_sft

``--model pretrained`` (default) builds a tiny random-weight Qwen2-shaped model with a BPE
tokenizer (``selfloop.testing``) and loads it with the ``pretrained`` provider; ``embedded`` is the
default model, placed on the device. Round 0 trains on labels (rejection SFT), round 1 runs the
optimizer (GRPO through TRL by default) on self-labels. Prints, per round, the device the model is
on, the optimizer's steps and loss, and the seconds the round took; exits non-zero when the model
is not where it was asked to be.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

SMOKE = Path(__file__).resolve().parent.parent / "examples/configs/smoke.toml"


def overrides(args, model_dir: Path | None) -> dict:
    if args.model == "pretrained":
        model = {"name": "pretrained", "options": {"path": str(model_dir), "device": args.device}}
    else:
        model = {"name": "embedded", "options": {"n_layer": 2, "n_embd": 64, "n_head": 4,
                                                 "max_positions": 48, "max_position_offset": 5,
                                                 "inference_offset": 0, "peers": 0, "device": args.device}}
    base = {"base_steps": args.base_steps, "batch_size": 16, "lr": 3e-3, "progress": False}
    optimizer = ({"name": "grpo", "options": {"steps": args.steps, "batch_size": 8, "generations": 4,
                                              "base_options": base}}
                 if args.optimizer == "grpo" else
                 {"name": "rejection_sft", "options": {**base, "steps": args.steps}})
    return {
        "acquire": [{"name": "labelled", "options": {"min_difficulty": 1, "max_difficulty": 2,
                                                     "per_difficulty": 64}},
                    {"name": "self_label", "options": {"start_difficulty": 3, "count": 32}}],
        "select": [{"name": "dedup"}, {"name": "cap_per_prompt"}],
        "optimizer": optimizer,
        "evaluate": [{"name": "dynamic_benchmark", "options": {"difficulties": [1, 3], "per_difficulty": 16}}],
        "model": model,
        "lifecycle": {"rounds": 1, "out": str(args.out), "admission": False, "plot": False},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cuda, cpu")
    parser.add_argument("--model", choices=["pretrained", "embedded"], default="pretrained")
    parser.add_argument("--optimizer", choices=["grpo", "rejection_sft"], default="grpo")
    parser.add_argument("--base-steps", type=int, default=50)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None, help="run directory (default: a temp dir)")
    args = parser.parse_args()

    import torch
    from selfloop.core.config import load_config
    from selfloop.core.lifecycle import Lifecycle
    from selfloop.core.registry import load_registry
    from selfloop.core.rundir import round_dir

    tmp = Path(tempfile.mkdtemp(prefix="selfloop-gpu-check-"))
    args.out = args.out or tmp / "run"
    model_dir = None
    if args.model == "pretrained":
        from selfloop.testing import tiny_bpe_model_dir

        model_dir = tiny_bpe_model_dir(tmp / "tiny-bpe")
    config = load_config(SMOKE, overrides=overrides(args, model_dir))
    print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}"
          + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))
    lifecycle = Lifecycle(config, load_registry(), args.out, log=lambda m: print("  " + m, flush=True))
    provider = lifecycle.components.model.component
    wanted = provider.device if hasattr(provider, "device") else args.device
    rows, started = [], time.perf_counter()

    def on_round(entry):
        nonlocal started
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        rows.append((entry.get("round"), entry.get("optimize", {}), seconds))

    lifecycle.run(on_round=on_round)
    policy = provider.load(round_dir(args.out, len(rows) - 1) / "model")
    device = policy.model.device
    print(f"model: {provider.describe() if hasattr(provider, 'describe') else args.model}")
    print(f"{'round':>5}  {'device':>8}  {'steps':>5}  {'loss':>8}  {'seconds':>8}")
    for index, metrics, seconds in rows:
        loss = metrics.get("loss", float("nan"))
        print(f"{index!s:>5}  {device.type:>8}  {metrics.get('steps', 0):>5.0f}  {loss:>8.4f}  {seconds:>8.1f}")
    ok = device.type == str(wanted).split(":")[0]
    print("ok" if ok else f"FAILED: the model is on {device}, not on {wanted}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
