"""Fixtures of the unit tests (offline smoke settings and the stderr hook are in the root conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def embedded_dir():
    """The materialised embedded model folder (created once per machine)."""
    from labhelpers.embedded import embedded_model_dir

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


@pytest.fixture(scope="module")
def lab():
    """The smoke profile as CI runs it: no LABS_MODEL override, seed 0 (whatever the shell exported)."""
    from labhelpers.profiles import profile

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LABS_PROFILE", "smoke")
        mp.delenv("LABS_MODEL", raising=False)
        mp.delenv("LABS_SEED", raising=False)
        return profile(verbose=False)
