"""labhelpers.deploy.verify: the GGUF answers like the merged model, and a broken file is named."""

from __future__ import annotations

import shutil

import pytest

from labhelpers import deploy as ex

PROMPTS = ["What is the capital of France?", "Name three colours.", "Say hello politely."]


def test_verify_f16_matches_the_merged_model_token_for_token(art):
    result = ex.verify_gguf(art.f16, art.merged, PROMPTS, max_new_tokens=16, model=art.hf, tokenizer=art.tok)
    print(result.summary())
    assert result.lossless and result.ok, result.summary()
    assert all(p.tokens_match for p in result.prompts)
    assert result.n_identical >= len(PROMPTS) - 1, result.summary()  # a numerical tie may split one answer
    assert abs(result.nll_delta) < 0.01
    assert 0 < result.seconds < 600 and f"-> OK ({result.seconds:.1f} s)" in result.summary()


def test_verify_quantized_reports_agreement_and_nll_change(art):
    result = ex.verify_gguf(art.q4, art.merged, PROMPTS, max_new_tokens=16, model=art.hf, tokenizer=art.tok)
    print(result.summary())
    assert not result.lossless and result.file_type == "Q4_K_M"
    assert all(p.tokens_match for p in result.prompts)
    # verify_gguf's own floor decides ok: every prompt tokenized alike and min_agreement (0.75) of greedy steps
    assert result.ok and result.min_agreement <= result.agreement <= 1.0, result.summary()
    # Q4_K_M costs this model +0.31 nats per prompt token (perplexity x1.36; measured, deterministic: greedy,
    # the same files). 0.5 nats (x1.65) leaves room for another llama.cpp build's rounding; wrong weights
    # cost more than 1 nat (test_verify_detects_a_tampered_gguf).
    assert 0 < result.nll_delta < 0.5, result.summary()
    assert "greedy choice" in result.summary() and "perplexity" in result.summary()


def test_verify_detects_a_tampered_gguf(art, tmp_path):
    import numpy as np

    bad = tmp_path / "tampered-f16.gguf"
    shutil.copy(art.f16, bad)
    _, tensors = ex.read_gguf_header(bad)
    _, kind, n, offset = next(t for t in tensors if t[0] == "output_norm.weight")
    assert kind == 0  # F32
    with open(bad, "r+b") as fh:  # same file structure, wrong weights: every logit flips sign
        fh.seek(offset)
        norm = np.frombuffer(fh.read(4 * n), dtype=np.float32)
        fh.seek(offset)
        fh.write((-norm).tobytes())
    result = ex.verify_gguf(bad, art.merged, PROMPTS[:2], max_new_tokens=8, model=art.hf, tokenizer=art.tok)
    assert not result.ok and result.n_identical == 0 and result.nll_delta > 1.0, result.summary()
    assert "FAILED" in result.summary()


def test_verify_names_a_truncated_file(art, tmp_path):
    bad = tmp_path / "truncated.gguf"
    bad.write_bytes(art.f16.read_bytes()[: 5_000_000])
    with pytest.raises(ValueError, match="truncated.gguf: llama.cpp cannot load this file"):
        ex.verify_gguf(bad, art.merged, PROMPTS[:1], max_new_tokens=4, model=art.hf, tokenizer=art.tok)
