"""What the GRO/refiner/selector benchmarks share: one round-0 checkpoint (the smoke-sized model,
trained once by ``selfloop run --rounds 0``), components built from a config, fixed problems."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("SELFLOOP_PROGRESS", "0")

SMOKE = Path(__file__).resolve().parents[1] / "examples" / "configs" / "smoke.toml"


def base_checkpoint(out: Path, *, config: Path = SMOKE, seed: int | None = None) -> Path:
    """``out``'s round-0 directory (model/, data.jsonl), trained first when it is not there."""
    round0 = out / "rounds" / "round_000"
    if not (round0 / "report.json").is_file():
        import tomllib

        from selfloop.core.config import to_toml

        data = tomllib.loads(Path(config).read_text())
        if seed is not None:
            data["seed"] = seed
            data.setdefault("model", {})["init_seed"] = seed
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
            f.write(to_toml(data))
        selfloop = Path(sys.executable).parent / "selfloop"
        subprocess.run([str(selfloop), "run", "--config", f.name, "--rounds", "0", "--out",
                        str(out)], check=True)
        os.unlink(f.name)
    return round0


def components(config_path: Path = SMOKE, overrides: dict | None = None):
    from selfloop.core.components import build_components
    from selfloop.core.config import load_config
    from selfloop.core.registry import load_registry

    return build_components(load_config(config_path, overrides or {}), load_registry([]))


def load(round_dir: Path, *, peers: bool = True):
    from selfloop.core.models import load_policy
    from selfloop.core.rundir import load_examples

    policy = load_policy(round_dir / "model")
    if not peers:
        policy.peers = []
    return policy, load_examples(round_dir / "data.jsonl")


def accuracy_row(acc: dict[int, float], digits) -> str:
    return " ".join(f"{100 * acc[d]:5.0f}" if d in acc else "    -" for d in digits)


def threads(n: int = 1) -> None:
    import torch

    torch.set_num_threads(n)
