"""labhelpers.deploy.native: llama.cpp runs in a child process, so its crash is an exception, never a dead kernel.

The crashes here are real: the child dereferences address 0 (SIGSEGV) or aborts (SIGABRT, what a
failed GGML_ASSERT does), and the parent process carries on.
"""

from __future__ import annotations

import ctypes
import math
import os
import platform
import time

import pytest

from labhelpers.deploy import native


def _segfault(*args, **kwargs):
    """Dies of SIGSEGV in whichever process calls it (module level: the spawned child imports it by name)."""
    ctypes.string_at(0)


def test_a_segfault_in_the_child_is_an_exception_naming_file_signal_and_fix(tmp_path):
    gguf = tmp_path / "model-Q4_K_M.gguf"
    with pytest.raises(native.NativeCrash) as info:
        native.run_isolated(_segfault, what="verify_gguf", path=gguf)
    message = str(info.value)
    assert info.value.signal == "SIGSEGV" and info.value.path == gguf
    assert message.startswith(f"llama.cpp (verify_gguf) on {gguf} was killed by SIGSEGV; this process is unharmed.")
    assert "bash scripts/setup.sh" in message and "TROUBLESHOOTING.md" in message
    assert native.run_isolated(math.sqrt, 16.0, what="after the crash") == 4.0  # this process still works


def test_an_abort_in_the_child_is_reported_as_sigabrt():
    with pytest.raises(native.NativeCrash, match=r"\(quantize to Q4_K_M\) was killed by SIGABRT"):
        native.run_isolated(os.abort, what="quantize to Q4_K_M")


def test_a_python_error_in_the_child_comes_back_as_itself():
    with pytest.raises(ValueError, match="invalid literal for int"):
        native.run_isolated(int, "not a number", what="parse")


def test_a_child_past_its_timeout_is_stopped():
    # the child sleeps 30 s: without the timeout run_isolated would return None, so the error is the timeout firing
    with pytest.raises(TimeoutError, match="did not finish within 1 s"):
        native.run_isolated(time.sleep, 30, what="sleep", timeout=1)


def test_quantize_gguf_survives_a_crashing_llama_cpp(tmp_path, monkeypatch):
    import labhelpers.deploy.gguf as g

    src = tmp_path / "m-f16.gguf"
    src.write_bytes(b"GGUF" + bytes(1000))
    monkeypatch.setattr(g, "_quantize_in_child", _segfault)
    with pytest.raises(native.NativeCrash, match=rf"on {src} was killed by SIGSEGV"):
        g.quantize_gguf(src, tmp_path / "m-Q4_K_M.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-f16.gguf"]  # no partial file left


def test_verify_gguf_survives_a_crashing_llama_cpp(tmp_path, monkeypatch, embedded_dir, tiny_model, tokenizer):
    import labhelpers.deploy.verify as gv

    gguf = tmp_path / "m-Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF" + bytes(1000))
    monkeypatch.setattr(gv, "_llama_greedy", _segfault)
    with pytest.raises(native.NativeCrash, match=rf"\(verify_gguf\) on {gguf} was killed by SIGSEGV"):
        gv.verify_gguf(gguf, embedded_dir, ["Hello"], max_new_tokens=2, model=tiny_model, tokenizer=tokenizer)


@pytest.mark.parametrize(
    ("info", "machine", "flagged"),
    [
        ("CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | OPENMP = 1 |", "x86_64", []),
        ("CPU : AVX2 = 1 | AVX512 = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 |", "x86_64",
         ["AVX512", "AVX512_VNNI", "AVX512_BF16", "AMX_INT8"]),
        ("CPU : AVX512 = 0 | AVX2 = 1 |", "x86_64", []),
        ("CPU : NEON = 1 | ARM_FMA = 1 | SVE = 1 | DOTPROD = 1 |", "aarch64", []),
    ],
)
def test_non_portable_features_reads_llama_cpp_system_info(info, machine, flagged):
    assert native.non_portable_features(info, machine) == flagged


def test_the_installed_llama_cpp_is_a_portable_build():
    """The wheel scripts/setup.sh built: on x86_64 the AVX2 level, no AVX-512, no AMX (issue: crash on a new CPU)."""
    info = native.system_info()
    assert "CPU :" in info, info
    if os.environ.get("LABS_LLAMA_NATIVE") != "1":
        assert native.non_portable_features(info) == [], info
    if platform.machine() == "x86_64":
        assert "AVX2 = 1" in info, info


def test_llama_cpp_flags_are_portable_for_both_architectures():
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "llama_cpp_flags.sh"
    env = {k: v for k, v in os.environ.items() if k != "LABS_LLAMA_NATIVE"}
    x86 = subprocess.run(["bash", str(script), "x86_64"], capture_output=True, text=True, env=env, check=True).stdout
    arm = subprocess.run(["bash", str(script), "aarch64"], capture_output=True, text=True, env=env, check=True).stdout
    for flags in (x86, arm):
        assert "-DGGML_NATIVE=OFF" in flags and "march=native" not in flags
    assert "-DGGML_AVX2=ON" in x86 and "-DGGML_AVX512=OFF" in x86 and "-DGGML_AMX_INT8=OFF" in x86
    assert "-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16" in arm
    native_flags = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=True,
                                  env={**env, "LABS_LLAMA_NATIVE": "1"}).stdout
    assert "-DGGML_NATIVE=ON" in native_flags
    unknown = subprocess.run(["bash", str(script), "mips"], capture_output=True, text=True, env=env)
    assert unknown.returncode == 2 and "LABS_LLAMA_NATIVE=1" in unknown.stderr
