"""Fixtures of the unit tests (offline smoke settings and the stderr hook are in the root conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def own_outputs_and_no_inherited_seed(tmp_path_factory, monkeypatch):
    """Each unit test writes to its own LABS_OUTPUT_DIR and trains with seed 0, whatever the shell exported.

    (Notebooks run by nbval or the runner share one output folder on purpose: labs 09 and 10 read what earlier
    labs wrote. This fixture reaches only the tests under tests/.)
    """
    monkeypatch.setenv("LABS_OUTPUT_DIR", str(tmp_path_factory.mktemp("outputs")))
    monkeypatch.delenv("LABS_SEED", raising=False)


@pytest.fixture(scope="session")
def embedded_dir():
    """The materialised embedded model folder (created once per machine)."""
    from labhelpers.profiles import embedded_model_dir

    return embedded_model_dir()


@pytest.fixture(scope="session")
def tiny_model(embedded_dir):
    """The embedded model in float32, loaded once for the whole session. Do not train it in place."""
    from labhelpers.models import load_model

    return load_model(str(embedded_dir))


@pytest.fixture(scope="session")
def tokenizer(embedded_dir):
    from labhelpers.models import load_tokenizer

    return load_tokenizer(str(embedded_dir))


@pytest.fixture(scope="module")
def tiny_llama(embedded_dir):
    """A 2-layer, 64-wide Llama with the embedded model's vocabulary and chat tokens, random weights.

    Training it takes seconds. One per test module: tests attach adapters to it.
    """
    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    cfg = AutoConfig.from_pretrained(embedded_dir)
    cfg.update(dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16))  # fmt: skip
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def _saved_bytes_per_token(model, layer, ids, head_dim: int) -> float:
    """Bytes autograd saves inside ``layer`` during one training forward, per token (parameters excluded)."""
    from labhelpers.memory import saved_activation_bytes

    rotary = 2 * ids.shape[1] * head_dim * 4  # cos and sin, computed once and shared by every layer
    return (saved_activation_bytes(model, ids, [layer]) - rotary) / ids.numel()


@pytest.fixture(scope="session")
def saved_bytes_per_token():
    """The probe the plan's activation counts are checked with: ``(model, layer, ids, head_dim) -> bytes/token``."""
    return _saved_bytes_per_token


@pytest.fixture(scope="module")
def lab():
    """The smoke profile as CI runs it: no LABS_MODEL override, seed 0 (whatever the shell exported)."""
    from labhelpers.profiles import profile

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LABS_PROFILE", "smoke")
        mp.delenv("LABS_MODEL", raising=False)
        mp.delenv("LABS_SEED", raising=False)
        return profile(verbose=False)


def _cpu_peak_bytes(fn) -> int:
    """Peak bytes of the CPU tensors alive at once while ``fn()`` runs (above those alive before), from torch's
    profiler."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action, MemoryProfile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    live = peak = 0
    for _, action, _, size in MemoryProfile(prof.profiler.kineto_results).timeline:
        live += size if action == Action.CREATE else -size if action == Action.DESTROY else 0
        peak = max(peak, live)
    return peak


@pytest.fixture(scope="session")
def cpu_peak_bytes():
    """The byte probe of transient memory: ``fn -> peak bytes`` of the tensors ``fn`` allocates (torch's profiler)."""
    return _cpu_peak_bytes
