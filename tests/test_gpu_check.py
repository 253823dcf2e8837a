"""scripts/gpu_check.sh and bench/gpu_check.py: the dry run, the wheel list, the time guards, and every item on a CPU.

The real check needs a CUDA machine; here its logic runs with ``--device cpu --tiny`` (the same items, CPU-sized
models, the smoke profile), and the dry run prints what the GPU run would do, on any machine (CI).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
WHEELS = ROOT / "scripts" / "gpu_wheels.sh"
LABS = ("lab03_lora_sft", "lab04_neftune", "lab05_qlora", "lab06_dpo", "lab07_simpo", "lab08_orpo", "lab09_kto",
        "lab12_grpo")


def _check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run(*args: str, script: Path = SCRIPT, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "LABS_OUTPUT_DIR": "/tmp/gpu-check-test"}
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_dry_run_lists_every_item_with_its_guard_the_wheels_and_the_sizes_within_8_minutes(tmp_path):
    out = tmp_path / "never.json"
    done = _run("--dry-run", "--out", str(out))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "14 items on cuda" in lines[0] and "budget 480 s" in lines[0]
    items = [line.split()[1] for line in lines[1:15]]
    assert items[:6] == ["environment", "bitsandbytes", "model_defaults", "throughput", "memory_lora_8b",
                         "memory_qlora_8b"]
    assert tuple(items[6:]) == LABS
    assert "skipped: bitsandbytes not available when absent" in lines[9]  # lab 05
    assert lines[15].startswith(("wheels in", "wheels: none")) and "64 MiB" in lines[16]
    assert not out.exists()  # a dry run writes nothing


def test_refuses_a_machine_without_cuda_and_unknown_arguments():
    bad = _run("--fast")
    assert bad.returncode == 2 and "unknown argument '--fast'" in bad.stderr
    missing = _run("--wheels", "/nonexistent-wheels")
    assert missing.returncode == 2 and "no wheels in /nonexistent-wheels" in missing.stderr
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the real check would run")
    done = _run()
    assert done.returncode == 2 and "no CUDA GPU visible" in done.stderr and "--dry-run" in done.stderr


def test_wheel_list_follows_the_pins_of_pyproject():
    done = _run("--list", script=WHEELS)
    assert done.returncode == 0, done.stderr
    pins = (ROOT / "pyproject.toml").read_text()
    for name in ("trl", "datasets", "transformers", "peft", "bitsandbytes"):
        line = next(x for x in pins.splitlines() if x.strip().startswith(f'"{name}=='))
        assert line.strip().strip('",') in done.stdout, name
    assert "limit: 67108864 bytes" in done.stdout


def test_an_item_past_its_guard_fails_and_the_next_still_runs(tmp_path):
    check = _check_module()
    ctx = check.Context(device="cpu", tiny=True, steps=1, work=tmp_path)
    slow = check.Item("slow", "sleeps past its guard", 1, 1, lambda ctx: time.sleep(5) or {"status": "pass"})
    assert check.run_item(slow, ctx, 1)["status"] == "fail"
    assert check.run_item(slow, ctx, 1)["error"] == "timed out after its 1 s guard"
    quick = check.Item("quick", "returns", 5, 1, lambda ctx: {"status": "pass"})
    assert check.run_item(quick, ctx, 5)["status"] == "pass"
    needs = check.Item("q", "needs bnb", 5, 1, lambda ctx: {"status": "pass"}, needs_bnb=True)
    assert check.run_item(needs, ctx, 5)["status"] == "skipped: bitsandbytes not available"


# On a CPU the labs' trainers take ~20 s each (test_full_profile.py trains them all with these builders): the CPU run
# here covers every kind of item once, an SFT and a preference trainer among them, one step each.
CPU_ITEMS = ("environment", "bitsandbytes", "model_defaults", "throughput", "memory_lora_8b", "memory_qlora_8b",
             "lab03_lora_sft", "lab07_simpo")


def test_the_items_run_on_a_cpu_with_tiny_models_and_write_the_summary(tmp_path):
    out = tmp_path / "gpu_run.json"
    check = _check_module()
    assert set(CPU_ITEMS) <= {item.name for item in check.ITEMS}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--tiny",
                           "--steps", "1", "--out", str(out), "--only", *CPU_ITEMS], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
    summary = json.loads(out.read_text())
    items = summary["items"]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert summary["passed"] and summary["failed"] == [] and summary["tiny"] and summary["device"].startswith("CPU")
    assert tuple(items) == CPU_ITEMS
    assert items["memory_qlora_8b"]["status"] == "skipped: the 8B-shaped QLoRA item quantizes on CUDA only"
    assert items["model_defaults"]["dtype"] == "torch.float32" and items["model_defaults"]["device"] == "cpu"
    assert items["environment"]["import_errors"] == {} and items["environment"]["status"] == "pass"
    lora = items["memory_lora_8b"]
    assert lora["status"] == "pass" and lora["layers"] == 2 and lora["hidden"] == 128
    assert lora["estimate_s"][0] < lora["estimate_s"][1] and "the estimate" in lora["estimate"]
    for lab in ("lab03_lora_sft", "lab07_simpo"):
        assert items[lab]["status"] == "pass", (lab, items[lab])
        assert items[lab]["steps"] == summary["steps_per_lab"] == 1 and items[lab]["bf16"] is False
    assert items["lab03_lora_sft"]["lab_steps"] == 15  # the smoke profile's SFT steps, built as lab 03 builds them
    assert ", 0 failed; " in done.stdout
    assert f"-> {out}" in done.stdout
