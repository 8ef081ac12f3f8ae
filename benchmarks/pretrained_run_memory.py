"""Peak memory and time of `selfloop run` with a pretrained-provider model on word_arithmetic.

By default the model is a random-weight Qwen2-shaped directory with a byte-level BPE tokenizer,
made as the tests make it (``selfloop.testing.tiny_bpe_model_dir``), at a few sizes; ``--model DIR``
measures your own instead. Each size runs the real command in a subprocess (one round of training
after the base round) and the table gives its parameters, the weights on disk, the run's peak
resident memory (``report.json``'s ``peak_rss_mib``; the process's own, children apart), the
whole-process peak from ``getrusage`` and the wall-clock.

    python benchmarks/pretrained_run_memory.py
    python benchmarks/pretrained_run_memory.py --model models/my-qwen --rounds 1
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """
[task]
name = "word_arithmetic"
[[acquire]]
name = "labelled"
options = {{ min_difficulty = 1, max_difficulty = 2, per_difficulty = 64 }}
[[acquire]]
name = "self_label"
options = {{ start_difficulty = 3, count = 32 }}
[[select]]
name = "dedup"
[[select]]
name = "format_filter"
[optimizer]
name = "rejection_sft"
options = {{ base_steps = 20, steps = 10, batch_size = 16 }}
[[evaluate]]
name = "dynamic_benchmark"
options = {{ min_difficulty = 1, max_difficulty = 3, per_difficulty = 16 }}
[model]
name = "pretrained"
options = {{ path = "{model}" }}
[lifecycle]
admission_per_difficulty = 32
threads = 2
"""

SIZES = {"tiny": {"hidden_size": 64, "layers": 2},
         "small": {"hidden_size": 256, "layers": 4},
         "base": {"hidden_size": 512, "layers": 8}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model directory of your own (default: random BPE models)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--sizes", default="tiny,small,base")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="selfloop-mem-"))
    models = {"yours": Path(args.model)} if args.model else {}
    if not models:
        from selfloop.testing import tiny_bpe_model_dir

        for name in args.sizes.split(","):
            models[name] = tiny_bpe_model_dir(work / name, **SIZES[name])
    selfloop = Path(sys.executable).parent / "selfloop"
    print(f"{'model':<8} {'params (M)':>10} {'weights MiB':>11} {'run peak MiB':>12} {'max child MiB':>13} {'seconds':>8}",
          flush=True)
    for name, model in models.items():
        config = work / f"{name}.toml"
        config.write_text(CONFIG.format(model=model))
        out = work / f"run-{name}"
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        started = time.perf_counter()
        done = subprocess.run([str(selfloop), "run", "--config", str(config), "--rounds", str(args.rounds),
                               "--out", str(out)], capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            print(f"{name}: failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        report = json.loads((out / "report.json").read_text())
        child_peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
        params = _parameters(model)
        weights = sum(p.stat().st_size for p in model.glob("*.safetensors")) / 2**20
        print(f"{name:<8} {params / 1e6:>10.2f} {weights:>11.1f} {report['peak_rss_mib']:>12.0f} "
              f"{child_peak:>13.0f} {wall:>8.1f}", flush=True)  # a row as each run ends


def _parameters(model: Path) -> int:
    from safetensors import safe_open

    total = 0
    for path in model.glob("*.safetensors"):
        with safe_open(str(path), "np") as f:
            for key in f.keys():  # noqa: SIM118 - a safetensors handle, not a dict
                total += _numel(f.get_slice(key).get_shape())
    return total


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


if __name__ == "__main__":
    main()
