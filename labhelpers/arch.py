"""Model architectures as numbers: read a decoder's config from anywhere and count its parameters exactly.

``arch_spec()`` accepts a transformers config object, a ``config.json``-shaped dict, a local model
folder, a hub id (only when it is in the local cache or the hub is reachable), or one of the
``KNOWN_CONFIGS`` shipped here so the memory plan of the full-size labs works offline.
No weights are ever loaded.

Families counted exactly (``FAMILIES``; ``tests/test_families.py`` checks each count against the model
transformers builds): Llama (TinyLlama, SmolLM2; ``attention_bias``/``mlp_bias``), Mistral, Qwen2 (biased
q/k/v), Gemma (GeGLU, its own ``head_dim``) and Phi-3 (fused ``qkv_proj`` and ``gate_up_proj``). Any other
``model_type``, and any mixture-of-experts config, is refused with a message that says so: a count that
silently missed extra norms or experts would make the memory plan wrong.

The two Llama 3.1 entries are copied from the public ``config.json`` of
``meta-llama/Llama-3.1-8B-Instruct`` and ``meta-llama/Llama-3.1-70B-Instruct`` on the Hugging Face Hub
(hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads, intermediate_size,
vocab_size, tie_word_embeddings=false, no biases).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    # https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct/blob/main/config.json
    "llama-3.1-8b": dict(
        model_type="llama", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, intermediate_size=14336, vocab_size=128256, tie_word_embeddings=False,
    ),
    # https://huggingface.co/meta-llama/Llama-3.1-70B-Instruct/blob/main/config.json
    "llama-3.1-70b": dict(
        model_type="llama", hidden_size=8192, num_hidden_layers=80, num_attention_heads=64,
        num_key_value_heads=8, intermediate_size=28672, vocab_size=128256, tie_word_embeddings=False,
    ),
}
# Hub ids the profiles use, answered from the table above without touching the network.
ALIASES = {
    "meta-llama/llama-3.1-8b-instruct": "llama-3.1-8b",
    "meta-llama/llama-3.1-8b": "llama-3.1-8b",
    "meta-llama/meta-llama-3.1-8b-instruct": "llama-3.1-8b",
    "meta-llama/llama-3.1-70b-instruct": "llama-3.1-70b",
    "meta-llama/llama-3.1-70b": "llama-3.1-70b",
    "meta-llama/meta-llama-3.1-70b-instruct": "llama-3.1-70b",
}
# The projection modules of a Llama-style decoder layer (what target_modules="all-linear" adapts).
ATTN_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
LINEAR_MODULES = ATTN_MODULES + MLP_MODULES
# Phi-3 fuses q/k/v into one projection and gate/up into another.
FUSED_MODULES = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
# model_type -> what its decoder layer has beyond Llama's (2 RMSNorms, GQA attention, gated MLP).
FAMILIES: dict[str, str] = {
    "llama": "Llama, TinyLlama, SmolLM2: biases only where attention_bias / mlp_bias say so",
    "mistral": "Mistral: like Llama, head_dim may differ from hidden_size / heads",
    "qwen2": "Qwen2, Qwen2.5: biases on q, k and v",
    "gemma": "Gemma: GeGLU MLP, its own head_dim, tied embeddings",
    "phi3": "Phi-3: fused qkv_proj and gate_up_proj",
}
_REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")


@dataclass(frozen=True)
class ArchSpec:
    """The numbers of a decoder (GQA attention, gated MLP, RMSNorm; see ``FAMILIES``) that fix its memory."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    family: str = "llama"
    fused: bool = False  # Phi-3: qkv_proj and gate_up_proj

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each projection of one decoder layer, by module name."""
        q, kv, h, i = self.heads * self.head_dim, self.kv_heads * self.head_dim, self.hidden, self.intermediate
        if self.fused:
            return {"qkv_proj": (h, q + 2 * kv), "o_proj": (q, h), "gate_up_proj": (h, 2 * i), "down_proj": (i, h)}
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def linear_modules(self) -> tuple[str, ...]:
        """The projection names of one layer: what ``target_modules="all-linear"`` adapts in this family."""
        return tuple(self.linear_shapes())

    def bias_modules(self) -> tuple[str, ...]:
        """The projections that carry a bias (Qwen2: q, k, v; Llama with attention_bias: q, k, v, o)."""
        qkv = ("qkv_proj",) if self.fused else ("q_proj", "k_proj", "v_proj")
        mlp = ("gate_up_proj", "down_proj") if self.fused else MLP_MODULES
        return (qkv if self.qkv_bias else ()) + (("o_proj",) if self.o_bias else ()) + (mlp if self.mlp_bias else ())

    def param_counts(self) -> dict[str, int]:
        """Exact parameter counts: embeddings, decoder projections (weights), biases, norms, lm_head."""
        shapes = self.linear_shapes()
        bias = sum(shapes[m][1] for m in self.bias_modules())
        return {
            "embeddings": self.vocab * self.hidden,
            "linear": self.layers * sum(i * o for i, o in shapes.values()),
            "biases": self.layers * bias,
            "norms": (2 * self.layers + 1) * self.hidden,
            "lm_head": 0 if self.tied else self.vocab * self.hidden,
        }

    @property
    def n_params(self) -> int:
        """Total parameter count (tied embeddings counted once, as ``model.num_parameters()`` does)."""
        return sum(self.param_counts().values())

    def as_dict(self) -> dict:
        return asdict(self)


def _from_dict(cfg: dict[str, Any], name: str) -> ArchSpec:
    text = cfg.get("text_config")  # multimodal wrappers keep the language model's numbers here
    if isinstance(text, dict) and "hidden_size" not in cfg:
        cfg = text
    missing = [k for k in _REQUIRED if cfg.get(k) is None]
    if missing:
        raise ValueError(
            f"config of {name!r} lacks {', '.join(missing)}: plan_memory understands the decoders in "
            f"labhelpers.arch.FAMILIES ({', '.join(FAMILIES)})."
        )
    if cfg.get("num_local_experts") or cfg.get("num_experts") or cfg.get("n_routed_experts"):
        raise ValueError(
            f"config of {name!r} is a mixture-of-experts model ({cfg.get('model_type')}), which plan_memory does "
            "not model: its memory depends on the experts' layout. Plan with a dense model of the same size."
        )
    family = str(cfg.get("model_type") or "llama")  # a bare dict of Llama numbers counts as Llama
    if family not in FAMILIES:
        raise ValueError(
            f"config of {name!r} has model_type={family!r}, which labhelpers.arch cannot count exactly "
            f"(it knows {', '.join(FAMILIES)}). Use a model of one of those families, or add {family!r} to "
            "FAMILIES in labhelpers/arch.py with its layer layout (tests/test_families.py checks it)."
        )
    heads = int(cfg["num_attention_heads"])
    return ArchSpec(
        name=name,
        hidden=int(cfg["hidden_size"]),
        layers=int(cfg["num_hidden_layers"]),
        heads=heads,
        kv_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads),
        intermediate=int(cfg["intermediate_size"]),
        vocab=int(cfg["vocab_size"]),
        tied=bool(cfg.get("tie_word_embeddings", False)),
        # Llama/Mistral/Gemma: attention_bias covers q/k/v/o; Qwen2 always has q/k/v biases, never an o bias.
        qkv_bias=bool(cfg.get("attention_bias")) or family == "qwen2",
        o_bias=bool(cfg.get("attention_bias")) and family != "qwen2",
        mlp_bias=bool(cfg.get("mlp_bias", False)),
        family=family,
        fused=family == "phi3",
    )


def arch_spec(config_or_model_id: Any) -> ArchSpec:
    """An ``ArchSpec`` from a config object, a dict, a model folder, a known name or a (cached) hub id."""
    src = config_or_model_id
    if isinstance(src, ArchSpec):
        return src
    if isinstance(src, dict):
        return _from_dict(src, str(src.get("_name_or_path") or src.get("model_type") or "dict"))
    if hasattr(src, "to_dict") and hasattr(src, "model_type"):  # a transformers PretrainedConfig
        text = src.get_text_config() if hasattr(src, "get_text_config") else src
        return _from_dict(text.to_dict(), str(getattr(src, "name_or_path", "") or src.model_type))
    if hasattr(src, "config") and hasattr(src.config, "to_dict"):  # a loaded model: use its config
        return arch_spec(src.config)
    if not isinstance(src, (str, os.PathLike)):
        raise TypeError(
            f"config_or_model_id: expected a name, a folder, a dict or a transformers config, got {type(src).__name__}."
        )
    name = os.fspath(src)
    key = ALIASES.get(name.lower(), name.lower())
    if key in KNOWN_CONFIGS:
        return _from_dict(KNOWN_CONFIGS[key], key)
    if name == "embedded":
        from labhelpers.profiles import embedded_model_dir

        return arch_spec(embedded_model_dir())
    path = Path(name).expanduser()
    if path.is_dir():
        file = path / "config.json"
        if not file.is_file():
            raise FileNotFoundError(f"config_or_model_id={name!r}: folder has no config.json.")
        return _from_dict(json.loads(file.read_text(encoding="utf-8")), name)
    try:
        from transformers import AutoConfig

        return arch_spec(AutoConfig.from_pretrained(name, trust_remote_code=False))
    except Exception as err:  # not cached offline, a typo, or no such repo
        raise ValueError(
            f"config_or_model_id={name!r} is not a known name ({', '.join(sorted(KNOWN_CONFIGS))}, embedded), "
            f"a folder with config.json, or a hub id whose config is available ({type(err).__name__}: {err})."
        ) from None
