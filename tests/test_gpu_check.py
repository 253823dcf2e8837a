"""scripts/gpu_check.sh: --dry-run shows the full-profile labs and the GPU bench, on any machine (CI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.sh"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "LABS_OUTPUT_DIR": "/tmp/gpu-check-test"}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)


def test_dry_run_lists_the_full_profile_labs_then_the_bench_within_8_minutes():
    done = _run("--dry-run")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "within 480 s in all" in lines[0]
    assert "LABS_PROFILE=full LABS_MODEL=embedded HF_HUB_OFFLINE=1" in lines[1]
    assert f"{sys.executable} -m labhelpers.runner" in lines[1]
    assert "bench/gpu_throughput.py" in lines[2] and "--json /tmp/gpu-check-test/full/gpu_throughput.json" in lines[2]
    assert "/tmp/gpu-check-test/full/run_summary.json" in lines[3]
    assert not Path("/tmp/gpu-check-test/full/run_summary.json").exists()  # a dry run writes nothing


def test_refuses_a_machine_without_cuda_and_unknown_arguments():
    bad = _run("--fast")
    assert bad.returncode == 2 and "unknown argument '--fast'" in bad.stderr
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the real check would run")
    done = _run()
    assert done.returncode == 2 and "no CUDA GPU visible" in done.stderr and "--dry-run" in done.stderr
