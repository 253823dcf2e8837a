"""Model and tokenizer loading, and chat-template generation, the same way in every lab.

Defaults that are right on both a Spark and a CPU: bf16 on a GPU, float32 on a CPU (CPU bf16
matmuls are slow and lossy), SDPA attention, safetensors only, ``trust_remote_code`` off.
4-bit is the QLoRA recipe: NF4 + double quantisation + bf16 compute.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from labhelpers.profiles import PROFILE_VAR, profile, resolve_model

Messages = list[dict[str, str]]


def model_path(name_or_path: str) -> str:
    """``"model"`` / ``"big_model"`` mean the current profile's models; anything else is resolved as given."""
    if name_or_path in ("model", "big_model"):
        return profile(verbose=False).resolve(name_or_path)
    return resolve_model(name_or_path, variable="name_or_path")


def default_dtype() -> torch.dtype:
    """bf16 where a GPU computes, float32 on a CPU."""
    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def bnb_config(quantization: str | None) -> Any:
    """The BitsAndBytesConfig for ``"4bit"`` (NF4, double quant, bf16 compute) or ``"8bit"``; None for none."""
    if quantization is None:
        return None
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"quantization={quantization!r}: use None, '4bit' (QLoRA) or '8bit'.")


def load_model(
    name_or_path: str = "model",
    *,
    quantization: str | None = None,
    dtype: torch.dtype | str | None = None,
    for_training: bool = False,
    trust_remote_code: bool = False,
    gradient_checkpointing: bool = False,
) -> Any:
    """Load a causal LM: ``"model"``/``"big_model"`` (the profile's), a local folder, or a hub id.

    ``for_training`` with a quantized model runs ``peft.prepare_model_for_kbit_training`` with
    ``use_gradient_checkpointing=False``: in peft 0.21.2 (``peft/utils/other.py``) it freezes every parameter
    and casts every fp16/bf16 parameter that is not 4-bit to fp32 (norms, embeddings, lm_head); with that
    flag it enables neither checkpointing nor input gradients. ``for_training`` + ``gradient_checkpointing``
    switches checkpointing on here, non-reentrant, which needs no input gradients (compute traded for
    memory); TRL's SFTTrainer calls ``enable_input_require_grads`` itself when its config asks for it.
    """
    from transformers import AutoModelForCausalLM

    path = model_path(name_or_path)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    quant = bnb_config(quantization)
    kwargs: dict[str, Any] = dict(
        dtype=dtype or default_dtype(),
        attn_implementation="sdpa",
        use_safetensors=True,
        trust_remote_code=trust_remote_code,
    )
    if quant is not None:
        kwargs["quantization_config"] = quant
        # One device: the whole model on the GPU (or CPU); never split across devices on a Spark.
        kwargs["device_map"] = {"": 0} if torch.cuda.is_available() else {"": "cpu"}
    elif torch.cuda.is_available():
        kwargs["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if for_training:
        model.config.use_cache = False
        if quant is not None:
            from peft import prepare_model_for_kbit_training

            # Checkpointing is switched on below: peft 0.21.2 would call transformers' deprecated
            # gradient_checkpointing_enable (a FutureWarning); with use_reentrant=False it needs nothing else.
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
            _keep_4bit_layout_trainable(model)
        if gradient_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.eval()
    return model


def _keep_4bit_layout_trainable(model: Any) -> None:
    """Stop bitsandbytes from repacking 4-bit weights into its CPU inference layout in a model meant for training.

    bitsandbytes 0.50 on CPUs with AVX512-BF16: the first forward of a ``Linear4bit`` in eval mode without
    gradients (the held-out loss measured before training) repacks its weights for a faster inference
    kernel, for good. Training then runs through ``gemv_4bit``, which has no backward: torch warns "an
    autograd kernel was not registered", the gradient to the layers below is lost, and a layer with a
    bias fails in place. A model loaded for training keeps the layout that trains (the GPU path is untouched).
    """
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False


def load_tokenizer(name_or_path: str = "model", *, padding_side: str = "right", trust_remote_code: bool = False) -> Any:
    """Load the tokenizer, make sure it has a pad token and a chat template.

    ``padding_side="right"`` for training, ``"left"`` for batched generation. A missing pad token is
    set to the EOS token (no new embedding rows to train).
    """
    from transformers import AutoTokenizer

    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side={padding_side!r}: use 'right' (training) or 'left' (generation).")
    path = model_path(name_or_path)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if not getattr(tok, "chat_template", None):
        raise ValueError(
            f"The tokenizer of {path!r} has no chat template. These labs format every example with the "
            "model's own template: use an Instruct/Chat model (e.g. Llama-3.1-8B-Instruct), "
            f"or check {PROFILE_VAR}/LABS_MODEL."
        )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def _as_messages(prompt: str | Messages) -> Messages:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return list(prompt)


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str | Messages],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    do_sample: bool = False,
    temperature: float = 0.7,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
) -> list[str]:
    """Answer each prompt through the chat template; greedy by default (reproducible comparisons).

    ``prompts`` are user messages (str) or whole message lists ending with a user turn. Returns the
    new text only, without the prompt, special tokens stripped. Sampling uses the model's generation config
    unless ``top_k`` / ``top_p`` are given (a GRPO trainer's sampler: ``top_k=0, top_p=1.0``, the full
    distribution at ``temperature``). ``batch_size`` prompts decode together:
    on a CPU each decoding step costs about the same for 8 or 32 rows, so larger batches are faster.
    """
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # batched generation continues every row from its last token
    outputs: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = [_as_messages(p) for p in prompts[start : start + batch_size]]
            texts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in chunk]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            kwargs: dict[str, Any] = dict(
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                pad_token_id=tokenizer.pad_token_id,
            )
            if do_sample:
                torch.manual_seed(seed + start)
                kwargs["temperature"] = temperature
                kwargs.update({k: v for k, v in (("top_k", top_k), ("top_p", top_p)) if v is not None})
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            out = model.generate(**enc, **kwargs)
            new = out[:, enc["input_ids"].shape[1] :]
            outputs.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
        if was_training:
            model.train()
    return outputs


def count_parameters(model: Any) -> dict[str, int | float]:
    """Trainable and total parameter counts (the numbers peft's ``print_trainable_parameters`` shows)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total, "trainable_pct": 100.0 * trainable / max(total, 1)}
