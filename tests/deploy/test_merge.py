"""labhelpers.deploy.merge: the merged model answers as the adapter did, safely written (fixture ``art``)."""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import pytest
import torch

from labhelpers import deploy as ex
from labhelpers import disk


def test_merged_model_outputs_equal_adapter_model_outputs(art):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = art.tok(["The capital of France is Paris, and", "LoRA adds low-rank matrices to"],
                  return_tensors="pt", padding=True).input_ids
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(art.base, dtype=torch.float32).eval()
        base_logits = base(ids).logits
        adapted = PeftModel.from_pretrained(base, str(art.adapter)).eval()
        adapter_logits = adapted(ids).logits
        merged_logits = art.hf(ids).logits
    change = (adapter_logits - base_logits).abs().max().item()
    error = (merged_logits - adapter_logits).abs().max().item()
    assert change > 1.0, f"the adapter barely changes the model ({change:.3f}): the test adapter is too weak"
    assert error < 0.05 * change, f"merged differs from base+adapter by {error:.4f} (adapter effect {change:.3f})"
    assert (merged_logits.argmax(-1) == adapter_logits.argmax(-1)).float().mean() > 0.95


def test_merge_writes_safetensors_tokenizer_and_chat_template_and_no_temp_folder(art):
    from transformers import AutoTokenizer

    names = {p.name for p in art.merged.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "MERGED_FROM.json"} <= names
    assert not any(n.endswith(".bin") for n in names)
    assert json.loads((art.merged / "config.json").read_text())["dtype"] == "float16"  # the base's own dtype
    template = AutoTokenizer.from_pretrained(art.merged).chat_template
    assert template == AutoTokenizer.from_pretrained(art.base).chat_template
    assert [p.name for p in art.root.iterdir() if p.name.startswith(".")] == []


def test_every_step_returns_what_it_wrote_with_its_wall_time_and_passes_on_as_that_path(art):
    import os

    for step, result in art.steps.items():
        assert isinstance(result, ex.TimedPath) and result.path.exists(), step
        assert 0 < result.seconds < 600, f"{step}: {result.seconds} s"
        assert os.fspath(result) == str(result) == str(result.path) and Path(result) == result.path, step
    with pytest.raises(AttributeError):  # frozen: a result is what the step measured
        art.steps["merge"].seconds = 0.0


def test_merge_refuses_to_overwrite_an_existing_folder(art):
    with pytest.raises(FileExistsError, match="already exists: pass overwrite=True"):
        ex.merge_adapter("embedded", art.adapter, art.merged)


def test_merge_refuses_when_the_disk_is_too_small(art, monkeypatch):
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda path: types.SimpleNamespace(total=10**9, used=0, free=1000))
    with pytest.raises(disk.NotEnoughDiskSpace, match=r"needs about 0\.\d GB .* only 0\.0 GB is free"):
        ex.merge_adapter("embedded", art.adapter, art.root / "never")
    assert not (art.root / "never").exists()


def test_merge_refuses_an_adapter_trained_on_another_model(art, tmp_path):
    other = tmp_path / "adapter"
    shutil.copytree(art.adapter, other)
    config = json.loads((other / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "meta-llama/Llama-3.1-8B-Instruct"
    (other / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="was trained on 'meta-llama/Llama-3.1-8B-Instruct'"):
        ex.merge_adapter("embedded", other, tmp_path / "merged")


def test_merge_refuses_a_prequantized_base(art, tmp_path):
    config = json.loads((Path(art.base) / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (tmp_path / "q4base").mkdir()
    (tmp_path / "q4base" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="pre-quantized checkpoint .*Merge onto the original"):
        ex.merge_adapter(str(tmp_path / "q4base"), art.adapter, tmp_path / "merged", check_base=False)


def test_adapter_folder_without_config_is_named_in_the_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter_config.json not found"):
        ex.merge_adapter("embedded", tmp_path, tmp_path / "merged")


def test_an_adapter_is_outdated_by_the_package_and_lab_03_by_default(tmp_path):
    """With no ``sources``, every labhelpers module (deploy/ and the rest) and lab 03's notebook are the code that
    trained the adapter lab 10 reuses: a missing adapter is outdated by all of them."""
    from labhelpers.deploy.merge import adapter_outdated

    root = Path(__file__).resolve().parents[2]
    files = adapter_outdated(tmp_path / "no-adapter")
    assert root / "labs" / "03_lora_sft.ipynb" in files
    assert root / "labhelpers" / "training.py" in files and root / "labhelpers" / "deploy" / "merge.py" in files
