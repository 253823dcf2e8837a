"""Every documented error of the deployment, data, evaluation, results and task verbs, one test each.

Each test builds the smallest input that reaches the error (a folder with one file, a fake tokenizer, a
GGUF of a few bytes, a subprocess that exits 1) and asserts on the message the learner reads. The one
test that merges loads a 2-layer model of the embedded vocabulary (tests/family_models.py), in seconds.
"""

from __future__ import annotations

import json
import subprocess
import types
from pathlib import Path

import pytest

from labhelpers import deploy as ex
from labhelpers.deploy import ollama as ol


def adapter_folder(folder: Path, base: str, weights: str | None = "adapter_model.safetensors") -> Path:
    """A peft adapter folder as far as the checks before loading look: its config, and a weights file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
    if weights:
        (folder / weights).write_bytes(b"")
    return folder


def write_gguf(path: Path, chat_template: str | None) -> Path:
    """A GGUF with a header only (no tensors), as the gguf package writes it."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# ------------------------------------------------------------------------------------- merge_adapter
def test_merge_adapter_names_a_bin_adapter_and_says_to_resave_it(embedded_dir, tmp_path):
    adapter = adapter_folder(tmp_path / "adapter", str(embedded_dir), weights="adapter_model.bin")
    with pytest.raises(FileNotFoundError, match=r"adapter_model\.safetensors not found \(a \.bin adapter: re-save "
                                                r"it with safetensors\): pass the folder adapter\.save_pretrained"):
        ex.merge_adapter(str(embedded_dir), adapter, tmp_path / "merged")


def test_merge_adapter_refuses_a_non_float_dtype(embedded_dir, tmp_path):
    adapter = adapter_folder(tmp_path / "adapter", str(embedded_dir))
    with pytest.raises(ValueError, match=r"dtype='int8': merge into one of .*float16.*\(never 4-bit or 8-bit\)"):
        ex.merge_adapter(str(embedded_dir), adapter, tmp_path / "merged", dtype="int8")
    assert not (tmp_path / "merged").exists()


def test_merge_adapter_refuses_a_tokenizer_larger_than_the_embeddings(tmp_path):
    from family_models import build_family
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = build_family("llama", tmp_path / "base")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=2, target_modules=["q_proj"]))  # fmt: skip
    adapter = tmp_path / "adapter"
    model.save_pretrained(adapter)
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.add_tokens(["<new_token>"])  # a token added for training, without resizing/saving the embeddings
    tokenizer.save_pretrained(adapter)
    rows = model.get_input_embeddings().weight.shape[0]
    with pytest.raises(ValueError, match=rf"has {rows + 1} tokens but the model only {rows} embedding rows: .*"
                                         r"modules_to_save"):
        ex.merge_adapter(str(base), adapter, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


# ----------------------------------------------------------------------------------- write_modelfile
def test_write_modelfile_needs_the_gguf_first(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.gguf not found: write the Modelfile after export_gguf"):
        ex.write_modelfile(tmp_path / "missing.gguf", types.SimpleNamespace(chat_template="{{ x }}"))


def test_write_modelfile_refuses_a_tokenizer_without_chat_template(tmp_path):
    gguf_file = write_gguf(tmp_path / "m.gguf", None)
    with pytest.raises(ValueError, match="The tokenizer has no chat template: there is no chat format to give Ollama"):
        ex.write_modelfile(gguf_file, types.SimpleNamespace(chat_template=None))


def test_write_modelfile_refuses_a_gguf_with_another_chat_template(tmp_path):
    gguf_file = write_gguf(tmp_path / "m.gguf", "{{ messages[0]['content'] }}")
    tokenizer = types.SimpleNamespace(chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(ValueError, match=r"m\.gguf embeds another chat template than this tokenizer: export it "
                                         "from the same folder"):
        ex.write_modelfile(gguf_file, tokenizer)
    assert not (tmp_path / "Modelfile").exists()


# ------------------------------------------------------------------------------------- ollama_create
def test_ollama_create_needs_the_modelfile(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Modelfile not found: write it with write_modelfile\(\)"):
        ex.ollama_create("lab10-test", tmp_path / "Modelfile")


def test_ollama_create_reports_a_failed_create_with_its_output(tmp_path, monkeypatch):
    (tmp_path / "Modelfile").write_text("FROM ./missing.gguf\n")
    monkeypatch.setattr(ol, "ollama_available", lambda timeout=1.0: True)
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append((cmd, kwargs))
        return subprocess.CompletedProcess(cmd, 1, stdout="gathering model components\n",
                                           stderr="Error: no such file or directory: missing.gguf\n")

    monkeypatch.setattr(ol.subprocess, "run", fake_run)
    with pytest.raises(RuntimeError, match=r"(?s)`ollama create lab10-test -f .*Modelfile` failed \(exit 1\):"
                                           r".*no such file or directory: missing\.gguf"):
        ex.ollama_create("lab10-test", tmp_path / "Modelfile")
    (cmd, kwargs), = calls
    assert kwargs["cwd"] == tmp_path and kwargs["env"]["OLLAMA_HOST"] == "127.0.0.1:11434"  # only the local server


# ----------------------------------------------------------------------------------------- gguf.py
def test_export_gguf_needs_a_merged_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json not found: pass the folder merge_adapter\(\) wrote"):
        ex.export_gguf(tmp_path / "not-merged", tmp_path / "m.gguf")


def test_export_gguf_reports_a_failed_conversion_with_the_log_tail(embedded_dir, tmp_path, monkeypatch):
    import labhelpers.deploy.gguf as g

    monkeypatch.setattr(g.importlib.util, "find_spec", lambda name, *a: object())  # the converter "is installed"
    monkeypatch.setattr(g.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, 2, stdout="", stderr="Traceback (most recent call last):\nKeyError: 'rope_theta'\n"))
    with pytest.raises(RuntimeError, match=r"(?s)convert_hf_to_gguf failed on .* \(exit 2\):.*KeyError: 'rope_theta'"):
        ex.export_gguf(embedded_dir, tmp_path / "m.gguf")
    assert not list(tmp_path.iterdir()), "a failed conversion left a file behind"


def test_quantize_gguf_needs_its_input(tmp_path):
    with pytest.raises(FileNotFoundError,
                       match=r"f16\.gguf not found: create it with export_gguf\(\.\.\., outtype='f16'\)"):
        ex.quantize_gguf(tmp_path / "f16.gguf", tmp_path / "q4.gguf")


def test_quantize_gguf_reports_llama_cpp_refusing(tmp_path, monkeypatch):
    import labhelpers.deploy.gguf as g
    import labhelpers.deploy.native as native

    source = write_gguf(tmp_path / "f16.gguf", None)
    monkeypatch.setattr(g, "require_llama_cpp", lambda what: None)
    monkeypatch.setattr(native, "run_isolated", lambda *a, **kw: (1, "llama_model_quantize: failed to quantize\n"))
    with pytest.raises(RuntimeError, match=r"(?s)llama\.cpp could not quantize .*f16\.gguf to Q4_K_M \(code 1\):"
                                           r".*failed to quantize"):
        ex.quantize_gguf(source, tmp_path / "q4.gguf")
    assert not (tmp_path / "q4.gguf").exists()


def test_read_gguf_header_refuses_a_file_that_is_not_gguf(tmp_path):
    other = tmp_path / "model.safetensors"
    other.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ValueError, match=r"model\.safetensors: not a GGUF file \(no GGUF magic at the start\)"):
        ex.read_gguf_header(other)


def test_read_gguf_header_names_a_truncated_header(tmp_path):
    whole = write_gguf(tmp_path / "whole.gguf", "{{ messages }}").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[:30])
    with pytest.raises(ValueError, match=r"cut\.gguf: ends inside its header \(truncated\?\)"):
        ex.read_gguf_header(cut)


# ---------------------------------------------------------------------------------- gguf_verify.py
def test_verify_gguf_needs_prompts_and_the_file(tmp_path):
    with pytest.raises(ValueError, match="prompts is empty: give a few held-out user messages"):
        ex.verify_gguf(tmp_path / "m.gguf", tmp_path, [])
    with pytest.raises(FileNotFoundError, match=r"m\.gguf not found"):
        ex.verify_gguf(tmp_path / "m.gguf", tmp_path, ["Hello?"])


# ----------------------------------------------------------------------------------------- data.py
def test_data_path_and_validation_name_the_allowed_kinds():
    from labhelpers.data import data_path, validate_rows

    with pytest.raises(ValueError, match="kind='dpo': use one of sft, preference, kto"):
        data_path("dpo")
    with pytest.raises(ValueError, match="kind='sft_rows': use one of sft, preference, kto"):
        validate_rows([], "sft_rows")


def test_load_lab_dataset_refuses_a_second_kind_and_a_zero_limit():
    from labhelpers.data import load_lab_dataset

    with pytest.raises(ValueError, match=r"load_lab_dataset\('sft', kind='kto'\): the name already says the kind"):
        load_lab_dataset("sft", kind="kto")
    with pytest.raises(ValueError, match="limit=0: must be at least 1"):
        load_lab_dataset("sft", limit=0)


def test_describe_refuses_an_empty_dataset_and_unknown_columns():
    from labhelpers.data import describe_dataset

    with pytest.raises(ValueError, match=r"describe_dataset\(\) got an empty dataset"):
        describe_dataset([])
    with pytest.raises(ValueError, match=r"cannot tell the dataset kind from columns \['question'\]; pass kind="):
        describe_dataset([{"question": "What is LoRA?"}])


# ----------------------------------------------------------------------------------- evaluation.py
def test_evaluation_refuses_empty_datasets_and_rows_without_an_answer(tokenizer, tiny_llama):
    from labhelpers.evaluation import heldout_loss, preference_pairs

    with pytest.raises(ValueError, match="heldout_loss: the dataset is empty"):
        heldout_loss(tiny_llama, tokenizer, [])
    with pytest.raises(ValueError, match="preference_pairs: the dataset is empty"):
        preference_pairs(tiny_llama, tokenizer, [])
    with pytest.raises(ValueError, match=r"row 0: expected a 'messages' field or 'prompt' \+ 'completion' fields, "
                                         r"got \['question'\]"):
        heldout_loss(tiny_llama, tokenizer, [{"question": "What is LoRA?"}])


# -------------------------------------------------------------------------------- results.py, task.py
def test_save_result_wants_a_dict(monkeypatch, tmp_path):
    from labhelpers.results import save_result

    monkeypatch.setenv("LABS_OUTPUT_DIR", str(tmp_path))
    with pytest.raises(TypeError, match="save_result: row must be a dict, got list"):
        save_result([("method", "dpo")])
    assert not list(tmp_path.rglob("results.jsonl"))


def test_reference_answer_names_the_fields_it_looked_for():
    from labhelpers.task import reference_answer

    with pytest.raises(KeyError, match=r"row has no reference answer \(fields: \['prompt'\]\); expected messages, "
                                       "chosen or completion"):
        reference_answer({"prompt": [{"role": "user", "content": "Hi"}]})
