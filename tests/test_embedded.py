"""The embedded smoke model materialises into a normal HF folder that reloads and chats."""

from __future__ import annotations

import json

from labhelpers.profiles import embedded_model_dir, gguf_path, is_materialised


def test_gguf_ships_inside_the_package():
    path = gguf_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50e6


def test_folder_is_plain_safetensors_without_gguf_marker(embedded_dir):
    assert is_materialised(embedded_dir)
    assert not list(embedded_dir.glob("*.bin")), "pickle weights must never be written"
    config = json.loads((embedded_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30


def test_second_call_reuses_the_folder(embedded_dir):
    before = (embedded_dir / "model.safetensors").stat().st_mtime
    assert embedded_model_dir() == embedded_dir
    assert (embedded_dir / "model.safetensors").stat().st_mtime == before


def test_reloaded_folder_chats_through_its_template(tiny_model, tokenizer):
    from labhelpers.models import generate

    assert "<|im_start|>" in tokenizer.chat_template
    answer = generate(tiny_model, tokenizer, ["What is the capital of France?"], max_new_tokens=12)[0]
    assert "Paris" in answer


def test_materialises_into_a_fresh_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LABS_CACHE_DIR", str(tmp_path))
    folder = embedded_model_dir()
    assert folder.parent == tmp_path and is_materialised(folder)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folder left behind"
