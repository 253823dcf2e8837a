"""The full profile's disk plan (labhelpers.disk.plan_disk) and the lab 00 check that uses it."""

from __future__ import annotations

import math

from labhelpers.arch import arch_spec
from labhelpers.deploy.gguf import GGUF_QUANT_TYPES
from labhelpers.disk import plan_disk
from labhelpers.envcheck import check_disk


def test_disk_plan_adds_downloads_lab10_files_adapters_and_checkpoints():
    plan = plan_disk()
    by = {i.what: i.bytes for i in plan.items}
    n8, n70 = arch_spec("llama-3.1-8b").n_params, arch_spec("llama-3.1-70b").n_params
    assert by["llama-3.1-8b download"] == by["merged bf16 model"] == by["f16 GGUF"] == 2 * n8
    assert by["llama-3.1-70b download"] == 2 * n70
    assert by["Q4_K_M GGUF"] == int(GGUF_QUANT_TYPES["Q4_K_M"][1] * 2 * n8)
    assert plan.total == sum(by.values())
    # the project's old "200 GB covers it" does not: downloads and lab 10 alone exceed it
    assert plan.total > 200e9
    assert f"**{plan.total / 1e9:,.1f}**" in plan.table() and plan.table().count("\n") == len(plan.items) + 2


def test_disk_plan_grows_with_rank_and_kept_checkpoints():
    base = plan_disk()
    assert plan_disk(rank=64).total > base.total
    assert plan_disk(save_total_limit=0).total < base.total


def test_lab00_disk_check_recommends_the_plan_total(tmp_path):
    check = check_disk(tmp_path)
    assert not check.required
    assert f"disk plan: {math.ceil(plan_disk().total / 1e9)} GB" in check.detail
    assert check_disk(tmp_path, recommended_gb=1e9).ok is False


def test_qlora_checkpoints_hold_trls_bf16_adapter_and_paged_8bit_adam_states():
    from labhelpers.memory import plan_memory

    n = plan_memory("llama-3.1-70b", method="qlora").trainable_params
    by = {i.what: i for i in plan_disk().items}
    row = by["QLoRA adapter + 2 checkpoints, r=16"]
    assert row.bytes == int((2 + 2 * (2 + 2 + 8 / 256)) * n) and "bf16 adapter" in row.how
    assert by["adapters + 2 checkpoints, r=16"].how.startswith("42 M LoRA parameters x (4 + 2 x 12) bytes")
    assert plan_disk(big_optimizer="adamw").items[-1].bytes == (2 + 2 * (2 + 4)) * n  # bf16 Adam states
