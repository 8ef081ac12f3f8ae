"""Peer models: trained beside the policy in their own processes, saved inside its checkpoint,
resumed with it, and named when they fail."""

from __future__ import annotations

import json

import pytest
from test_lifecycle_run import TINY

PEERS_ONLY_FAIL = '''
import multiprocessing

from selfloop.core.hookspecs import hookimpl
from selfloop.plugins.optimize.rejection_sft import RejectionSFT


class FailsInPeers(RejectionSFT):
    """Trains like rejection_sft, except in a peer's worker process after the base round."""

    def optimize(self, policy, examples, **kwargs):
        if multiprocessing.parent_process() is not None and kwargs["round_index"] >= 1:
            raise RuntimeError("peer worker refuses")
        return super().optimize(policy, examples, **kwargs)


@hookimpl
def register_optimizer(register):
    register("fails_in_peers", FailsInPeers)
'''


def with_peers(text: str, peers: int) -> str:
    changed = text.replace("peers = 0 ", f"peers = {peers} ")
    assert changed != text
    return changed


@pytest.mark.slow
def test_peers_train_beside_the_policy_and_resume_with_it(run_selfloop, tmp_path):
    import torch
    from selfloop.core.models import load_policy

    config = tmp_path / "peers.toml"
    config.write_text(with_peers(TINY, 2))
    out = tmp_path / "run"
    result = run_selfloop("run", "--config", config, "--rounds", "1", "--out", out)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    for entry in report["rounds"]:
        assert [m["steps"] for m in entry["peers_optimize"]] == [entry["optimize"]["steps"]] * 2
        assert all(m["peak_rss_mib"] > 100 for m in entry["peers_optimize"])  # a process with torch
    policy = load_policy(out / "rounds/round_001/model")
    assert [p.path.name for p in policy.peers] == ["1", "2"]
    weights = [dict(m.model.named_parameters())["model.embed_tokens.weight"]
               for m in (policy, *policy.peers)]
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])

    # a resumed run starts from the saved peers and keeps training them
    result = run_selfloop("run", "--config", config, "--rounds", "2", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stderr
    report = json.loads((out / "report.json").read_text())
    assert len(report["rounds"][2]["peers_optimize"]) == 2


@pytest.mark.slow
def test_a_failing_peer_is_named_and_the_finished_rounds_are_kept(run_selfloop, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "fails_in_peers.py").write_text(PEERS_ONLY_FAIL)
    config = tmp_path / "peers.toml"
    config.write_text(with_peers(TINY, 1).replace(
        '[optimizer]\nname = "rejection_sft"', '[optimizer]\nname = "fails_in_peers"'))
    out = tmp_path / "run"
    result = run_selfloop("run", "--config", config, "--plugins-dir", plugins, "--rounds", "1",
                          "--out", out)
    assert result.returncode != 0
    assert "fails_in_peers (peer 1)" in result.stderr and "peer worker refuses" in result.stderr
    assert "Traceback" not in result.stderr
    assert (out / "rounds/round_000/report.json").exists()  # the finished round stays
    assert not (out / "rounds/round_001/report.json").exists()
