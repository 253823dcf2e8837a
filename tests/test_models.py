"""Model/tokenizer loading and chat-template generation."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch

from labhelpers.models import bnb_config, count_parameters, generate, load_model, load_tokenizer


def test_cpu_defaults_fp32_sdpa_eval(tiny_model):
    assert tiny_model.dtype == torch.float32
    assert tiny_model.config._attn_implementation == "sdpa"
    assert not tiny_model.training


def test_profile_keyword_loads_the_profile_model(monkeypatch, tokenizer):
    monkeypatch.delenv("LABS_MODEL", raising=False)
    tok = load_tokenizer("model")
    assert tok.get_vocab() == tokenizer.get_vocab()


def test_four_bit_is_nf4_double_quant_and_smaller(embedded_dir, tiny_model):
    cfg = bnb_config("4bit")
    assert cfg.bnb_4bit_quant_type == "nf4" and cfg.bnb_4bit_use_double_quant
    assert cfg.bnb_4bit_compute_dtype == torch.bfloat16
    q = load_model(str(embedded_dir), quantization="4bit", for_training=True)
    assert type(q.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    assert q.get_memory_footprint() < 0.6 * tiny_model.get_memory_footprint()


def test_a_4bit_model_loaded_for_training_still_trains_after_an_eval_pass(embedded_dir):
    """bitsandbytes repacks 4-bit weights for CPU inference on the first no-grad eval forward (AVX512-BF16
    CPUs); afterwards gradients no longer pass through the base layers. load_model(for_training=True) prevents it."""
    import warnings

    from peft import LoraConfig, get_peft_model

    q = load_model(str(embedded_dir), quantization="4bit", for_training=True)
    linear4 = [m for m in q.modules() if type(m).__name__ == "Linear4bit"]
    assert linear4 and not any(m.support_avx512bf16_for_cpu for m in linear4)
    model = get_peft_model(q, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    ids = torch.tensor([[1, 504, 3458, 28, 638, 359, 346, 47]])
    model.eval()
    with torch.no_grad():  # the held-out loss a lab measures before training
        model(ids, labels=ids)
    model.train()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", UserWarning)
        model(ids, labels=ids).loss.backward()
    assert not [w for w in seen if "autograd kernel was not registered" in str(w.message)]
    first = next(p for n, p in model.named_parameters() if ".layers.0." in n and "lora_B" in n)
    assert first.grad is not None and first.grad.abs().sum() > 0, "no gradient reached layer 0's adapter"


def test_unknown_quantization_is_refused():
    with pytest.raises(ValueError, match=r"quantization='3bit'.*'4bit'"):
        bnb_config("3bit")


def test_tokenizer_has_pad_and_side(tokenizer, embedded_dir):
    assert tokenizer.pad_token is not None and tokenizer.padding_side == "right"
    assert load_tokenizer(str(embedded_dir), padding_side="left").padding_side == "left"
    with pytest.raises(ValueError, match="padding_side='middle'"):
        load_tokenizer(str(embedded_dir), padding_side="middle")


def test_tokenizer_without_chat_template_is_refused(embedded_dir, tmp_path):
    for f in embedded_dir.iterdir():
        if f.name != "chat_template.jinja":
            shutil.copy(f, tmp_path / f.name)
    with pytest.raises(ValueError, match="has no chat template"):
        load_tokenizer(str(tmp_path))


def test_generate_returns_new_text_only_and_is_deterministic(tiny_model, tokenizer):
    prompts = ["Name a primary colour.", [{"role": "user", "content": "Say hello."}]]
    first = generate(tiny_model, tokenizer, prompts, max_new_tokens=8)
    again = generate(tiny_model, tokenizer, prompts, max_new_tokens=8)
    assert first == again and all(first)
    assert not any("<|im_start|>" in t or "Name a primary" in t for t in first)


def test_batched_generation_matches_one_by_one(tiny_model, tokenizer):
    prompts = ["Hi", "Explain what a GPU is in one short sentence please."]
    batched = generate(tiny_model, tokenizer, prompts, max_new_tokens=8, batch_size=2)
    single = [generate(tiny_model, tokenizer, [p], max_new_tokens=8)[0] for p in prompts]
    assert batched == single


def test_count_parameters(tiny_model):
    """The count is the Llama formula on the model's own config: per layer q, k, v, o, gate, up, down and two
    norms; the (tied) embedding once; the final norm."""
    cfg = tiny_model.config
    h, inter, head = cfg.hidden_size, cfg.intermediate_size, cfg.hidden_size // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * head, cfg.num_key_value_heads * head
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * inter + 2 * h
    embeddings = cfg.vocab_size * h * (1 if cfg.tie_word_embeddings else 2)
    counts = count_parameters(tiny_model)
    assert counts["total"] == cfg.num_hidden_layers * per_layer + embeddings + h
    assert counts["trainable"] == counts["total"]
    frozen = copy.deepcopy(tiny_model.model.norm).requires_grad_(False)
    assert count_parameters(frozen) == {"trainable": 0, "total": h, "trainable_pct": 0.0}
