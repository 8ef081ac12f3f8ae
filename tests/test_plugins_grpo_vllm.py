"""GRPO's rollouts through vLLM: the modes map onto TRL's GRPOConfig fields, and bad ones are one
clear error. (vLLM itself needs a GPU; here "auto" must fall back to the trainer's generate.)"""

from __future__ import annotations

import importlib.util

import pytest
from selfloop.plugins.optimize.grpo import GRPO, vllm_args


def test_auto_uses_vllm_only_with_vllm_and_a_gpu():
    import torch

    expected = bool(importlib.util.find_spec("vllm")) and torch.cuda.is_available()
    assert vllm_args("auto", None)["use_vllm"] is expected


def test_server_and_colocate_modes_are_what_trl_reads(tmp_path):
    from trl import GRPOConfig

    server = vllm_args("server", "http://127.0.0.1:8000")
    config = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", **server)
    assert (config.use_vllm, config.vllm_mode, config.vllm_server_base_url) == (True, "server", "http://127.0.0.1:8000")
    assert vllm_args("colocate", None) == {"use_vllm": True, "vllm_mode": "colocate"}
    assert vllm_args("off", None) == {"use_vllm": False}


@pytest.mark.parametrize("options, message", [({"vllm": "sometimes"}, "one of auto, off, colocate, server"),
                                              ({"vllm": "server"}, "needs vllm_server")])
def test_bad_vllm_options_are_one_clear_error(options, message):
    with pytest.raises(ValueError, match=message):
        GRPO(**options)
