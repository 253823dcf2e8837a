"""Memory, predicted: ``plan_memory`` computes a fine-tuning run's peak from the model config alone, for
one process or per rank of a distributed run (FSDP full sharding or plain data parallel); ``plot_memory``
draws it.


- weights: every parameter at 2 (bf16) or 4 (fp32) bytes. QLoRA: decoder projections in NF4 with double
  quantisation = 0.5 + 1/64 (8-bit absmax per 64 weights) + 4/(64*256) (fp32 absmax per 256 absmax) bytes
  per weight; embeddings, norms and lm_head are not quantised (transformers skips the output embedding,
  bitsandbytes only replaces nn.Linear) and stay in ``dtype``, or fp32 after
  ``peft.prepare_model_for_kbit_training`` (``kbit_upcast=True``: what ``load_model(..., quantization="4bit",
  for_training=True)`` runs).
- lora: r * (in + out) per adapted projection per layer, fp32 (peft upcasts adapters by default), except
  QLoRA: bf16, as TRL 1.16's SFTTrainer casts a quantized model's trainable adapter weights
  (``trl/trainer/sft_trainer.py``, "the PEFT adapter weights are converted to bf16", QLoRA paper section 3).
- gradients: one per trainable parameter, in its dtype. optimizer: AdamW 2 states in the parameter dtype
  (torch's AdamW allocates them ``zeros_like(param)``: bf16 for QLoRA's adapter); 8-bit AdamW 2 bytes + 2 fp32
  absmax per 256; SGD (no momentum) none.
- activations: what autograd keeps for backward, per token per layer, counted tensor by tensor for a
  Llama layer with SDPA attention (no seq^2 scores): 2 RMSNorm inputs upcast to fp32 (4h+4 each);
  q, k, v and the attention output (2a+2kv elements, a = heads*head_dim, kv = kv_heads*head_dim) and
  the softmax log-sum-exp (4 bytes per head); gate, up and SiLU outputs (3I elements); the inputs of the
  adapted projections (shared in fp32 training, one bf16 copy per projection under autocast, one fp32 copy
  per projection when peft casts a bf16 input to its fp32 adapter; with LoRA dropout, its output replaces that
  copy and its mask is added: 1 byte on CUDA, the input's dtype on a CPU); r per adapter
  (lora_A output). Phi-3's fused ``qkv_proj`` keeps its whole output alive (v is a slice of it) and copies
  the attention output for ``o_proj``: 2a+kv more elements. Gradient checkpointing keeps only each layer's input (h elements) and recomputes one
  layer at a time during backward. Verified against ``torch.autograd.graph.saved_tensors_hooks``.
  ``packed=True`` (padding-free packing, what ``sft_config`` trains with): the batch's rows are one sequence of
  L = batch * seq_len tokens whose ``position_ids`` restart per example, so transformers builds one boolean
  block-diagonal (1, 1, L, L) mask (L^2 bytes) and SDPA in every decoder layer turns it into its own fp32 copy
  that autograd keeps (4 L^2 bytes per layer); with gradient checkpointing the boolean mask stays alive (a
  checkpointed input) and one recomputed layer holds its fp32 copy: 5 L^2 bytes.
- logits, ``lm_head="full"`` (Trainer, DPO and the other trainers that build the logits): the loss upcasts
  logits to fp32; at the start of backward the saved log-softmax, its gradient and the logits gradient
  coexist: 12 bytes * vocab per token. ``lm_head="chunked"`` (TRL 1.16's SFTTrainer: ``add_fused_lm_head``,
  ``trl/kernels/chunked_logprob.py``): no full logits; the head is computed in tiles of at most 4,096 tokens x
  32,768 vocabulary entries, recomputed in backward. On a CPU (no Triton) the tile is folded with torch ops in
  fp32 and the fold's temporaries peak at ``CHUNKED_TILE_BYTES_CPU`` bytes per tile element (counted with torch's
  profiler, tests/test_memory.py); on a GPU the Triton kernels work in place on one tile in the compute dtype,
  plus the fp32 hidden-state gradient and the hidden states gathered for the head (6 bytes * hidden per
  token) and, for an fp32 head under autocast, a bf16 copy of one weight chunk.
- workspace: bf16 copies autocast keeps of fp32 weights (adapters; lm_head after kbit upcast) and, for
  QLoRA, the largest projection de-quantised to bf16 during a matmul.
- overhead: the CUDA context and cuBLAS workspaces that torch's counters do not see (0 for device="cpu").

The total is a sum, so it slightly over-states a peak where two transients cannot coexist (with
gradient checkpointing: the logits and the recomputed layer). ``bench/memory_plan.py`` compares it with
measured peaks; the CUDA allocator's cache (reserved minus allocated, typically 5-10 %) is not in the
plan, which is why ``preflight`` keeps 10 % headroom.

Per rank (``world_size`` > 1), each rank runs its own micro-batch, so activations, logits, workspace and
overhead are per rank as above. ``sharding="full_shard"`` (FSDP FULL_SHARD / FSDP2 reshard after forward):
weights, adapters, gradients and optimizer states are split evenly (ceil(x / world_size)), and a rank
gathers one wrapped unit's full parameters while it computes with it: ``communication`` is the largest
unit (a decoder layer, or the root: embeddings + lm_head + final norm). ``sharding="no_shard"`` (plain
data parallel, DDP): everything is replicated, and DDP's reducer keeps its gradient buckets, a second copy
of the trainable gradients (``communication``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .model_configs import ArchSpec, arch_spec

if TYPE_CHECKING:
    from .memory import MemoryTracker

GB = 1e9
METHODS = ("full", "lora", "qlora")
OPTIMIZERS = {"adamw": None, "adamw_8bit": 2 + 8 / 256, "paged_adamw_8bit": 2 + 8 / 256, "sgd": 0.0}
DTYPES = {"bf16": 2, "fp32": 4}
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
CUDA_CONTEXT_BYTES = int(0.8 * GB)  # torch 2.11 + CUDA 13 context and cuBLAS handles, measured on an H200
LOGIT_BYTES_PER_VOCAB = 12  # fp32 log-softmax output + its grad + the logits grad at backward start
LM_HEADS = ("full", "chunked")
CHUNK_TOKENS, CHUNK_VOCAB = 4096, 32768  # trl 1.16: TOKEN_CHUNK_SIZE, trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE
CHUNKED_TILE_BYTES_CPU = 33  # the torch fold's fp32 temporaries, per tile element (forward + backward peak)
SHARDING = ("full_shard", "no_shard")


# --------------------------------------------------------------------------------------------- plan
@dataclass
class MemoryPlan:
    """Predicted peak memory of a training run, by component, in bytes (``total``, ``table()``, ``as_dict()``)."""

    model: str
    method: str
    dtype: str
    batch: int
    seq_len: int
    rank: int
    gradient_checkpointing: bool
    optimizer: str
    n_params: int
    trainable_params: int
    weights: int
    lora: int
    gradients: int
    optimizer_states: int
    activations: int
    logits: int
    workspace: int
    overhead: int
    communication: int = 0
    reference: int = 0  # GRPO/DPO-style KL reference kept in memory (beta > 0)
    kv_cache: int = 0  # generation's key/value cache (GRPO: every completion of one generation call)
    world_size: int = 1
    sharding: str = "none"
    details: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict, repr=False)

    COMPONENTS = ("weights", "lora", "reference", "gradients", "optimizer_states", "activations", "logits",
                  "kv_cache", "workspace", "communication", "overhead")
    _SHOWN_IF_USED = ("reference", "kv_cache", "communication")

    @property
    def total(self) -> int:
        return sum(getattr(self, c) for c in self.COMPONENTS)

    def breakdown(self) -> dict[str, int]:
        """Component name -> bytes, in display order."""
        return {c: getattr(self, c) for c in self.COMPONENTS}

    def as_dict(self) -> dict:
        out = asdict(self)
        out.pop("settings")
        return {**out, "total": self.total}

    def table(self) -> str:
        """The breakdown in GB, one component per line, then the total."""
        ckpt = ", gradient checkpointing" if self.gradient_checkpointing else ""
        head = (f"{self.model} {self.method} {self.dtype}, batch {self.batch} x seq_len {self.seq_len}, "
                f"r={self.rank}, {self.optimizer}{ckpt}: {self.n_params / 1e9:.2f} B params, "
                f"{self.trainable_params / 1e6:.1f} M trainable")
        if self.world_size > 1:
            head += f"; per rank of {self.world_size} ({self.sharding})"
        rows = [f"  {c.replace('_', ' '):<17}{v / GB:>9.2f} GB" for c, v in self.breakdown().items()
                if c not in self._SHOWN_IF_USED or v > 0 or (c == "communication" and self.world_size > 1)]
        return "\n".join([head, *rows, f"  {'total':<17}{self.total / GB:>9.2f} GB"])

    __str__ = table


def _targets(arch: ArchSpec, target_modules: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    names = arch.linear_modules  # the family's own projection names (Phi-3: qkv_proj, gate_up_proj)
    if target_modules == "all-linear":
        return names
    mods = (target_modules,) if isinstance(target_modules, str) else tuple(target_modules)
    bad = [m for m in mods if m not in names]
    if bad or not mods:
        raise ValueError(f"target_modules={target_modules!r}: use 'all-linear' or names from {names} "
                         f"({arch.family}).")
    return mods


def _layer_bytes(arch: ArchSpec, method: str, targets: tuple[str, ...], rank: int, res: int, attn_b: int,
                 mlp_b: int, autocast: bool, dropout: str, adapter_b: int = 4) -> float:
    """Bytes autograd saves per token in one decoder layer (see the module docstring).

    ``dropout``: "" (no LoRA dropout), "bool" (CUDA's fused dropout keeps a 1-byte mask) or "dtype" (on a CPU
    dropout multiplies by a noise tensor in the input's dtype, which autograd keeps).
    """
    h, inter = arch.hidden, arch.intermediate
    a, kv = arch.heads * arch.head_dim, arch.kv_heads * arch.head_dim
    total = 2 * (4 * h + 4)  # two RMSNorm inputs, upcast to fp32, and 1/rms
    total += attn_b * (2 * a + 2 * kv) + 4 * arch.heads  # q, k, v, attention output; log-sum-exp
    if arch.fused:  # Phi-3: v is a slice of qkv_proj's output, which stays whole; o_proj gets a contiguous copy
        total += attn_b * (2 * a + kv)
    total += mlp_b * 3 * inter  # gate, up, SiLU(gate)
    # projection inputs, grouped by the tensor they read: (modules, width, dtype bytes, already saved)
    qkv, gate_up = (("qkv_proj",), ("gate_up_proj",)) if arch.fused else (("q_proj", "k_proj", "v_proj"),
                                                                          ("gate_proj", "up_proj"))
    groups = [(qkv, h, res, False), (("o_proj",), a, attn_b, True),
              (gate_up, h, res, False), (("down_proj",), inter, mlp_b, False)]
    if method == "full":
        total += 2 * res * h  # normalised states the RMSNorm weights need
        for mods, width, dt, saved in groups:
            shared = dt == 2 or not autocast
            total += (0 if saved else dt * width) if shared else len(mods) * 2 * width
        return total
    for mods, width, dt, saved in groups:
        n = sum(m in targets for m in mods)
        if n == 0:
            continue
        if autocast or adapter_b == 2:  # a bf16 copy of the input per projection: autocast's for the fp32
            # adapter, or peft's cast to TRL's bf16 QLoRA adapter (before dropout: a bf16 mask on a CPU)
            mask = {"": 0, "bool": 1, "dtype": 2 if adapter_b == 2 else dt}[dropout]
            total += n * (2 + mask) * width
        elif dropout:  # dropout output (fp32) and its mask per projection
            total += n * (4 + (1 if dropout == "bool" else 4)) * width
        elif dt == 4:  # fp32 input read directly by the fp32 adapter: saved once
            total += 0 if saved else 4 * width
        else:  # bf16 input cast to fp32 by peft, one copy per projection
            total += n * 4 * width
        total += n * rank * (2 if autocast else adapter_b)  # lora_A output
    return total


def _unit_bytes(arch: ArchSpec, method: str, w: int, upcast: bool, lora_params: int) -> dict[str, int]:
    """Full (unsharded) bytes of the units FSDP wraps: one decoder layer with its adapters, and the root."""
    counts = arch.param_counts()
    other = 4 if upcast else w  # norms, biases, embeddings, lm_head: fp32 after QLoRA's kbit upcast
    linear = counts["linear"] // arch.layers * (NF4_BYTES if method == "qlora" else w)
    layer = linear + ((counts["norms"] - arch.hidden) // arch.layers + counts["biases"] // arch.layers) * other
    root = (counts["embeddings"] + counts["lm_head"] + arch.hidden) * other  # + the final norm
    adapter_b = 2 if method == "qlora" else 4
    return {"decoder_layer": int(layer + adapter_b * lora_params // arch.layers), "root": int(root)}


def plan_memory(config_or_model_id: Any, method: str = "lora", batch: int = 1, seq_len: int = 512,
                rank: int = 16, gradient_checkpointing: bool = False, optimizer: str = "adamw",
                target_modules: str | list[str] = "all-linear", dtype: str = "bf16", *,
                lora_dropout: float = 0.0, autocast: bool | None = None, kbit_upcast: bool = True,
                device: str = "cuda", world_size: int = 1, sharding: str = "full_shard",
                lm_head: str = "full", packed: bool = False, reference: bool = False,
                kv_rows: int = 0, kv_tokens: int = 0) -> MemoryPlan:
    """Predict a fine-tuning run's peak memory (per rank when ``world_size`` > 1) from the model config alone.

    ``autocast`` (default: on for bf16) is Trainer/TRL's ``bf16=True``; ``kbit_upcast`` means QLoRA went
    through ``prepare_model_for_kbit_training``; ``device="cpu"`` drops the CUDA context overhead;
    ``world_size`` processes (one per Spark) with ``sharding`` "full_shard" (FSDP) or "no_shard" (data parallel);
    ``lm_head`` "full" (the trainer builds the logits) or "chunked" (TRL's SFTTrainer: the fused, tiled head);
    ``packed``: a padding-free packed batch (one sequence of batch x seq_len tokens, block-diagonal mask).
    GRPO (lab 12): ``reference`` keeps a KL reference (TRL's ``beta`` > 0): for LoRA a frozen copy of the adapter
    (TRL 1.16 copies a loaded adapter as "ref"; with a fresh ``peft_config`` the reference is the adapter switched
    off and costs nothing, so this is the larger case), for a full fine-tune a copy of the weights.
    ``kv_rows`` x ``kv_tokens``: the key/value cache of one generation call (completions sampled together x
    prompt + completion tokens), 2 x layers x kv_heads x head_dim values per token in the weights' dtype. It is
    live while generating, not while the loss runs, so adding it to the training peak over-counts: the plan is
    an upper bound by up to this term.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}: use one of {METHODS}.")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r}: use one of {tuple(OPTIMIZERS)}.")
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: use one of {tuple(DTYPES)}.")
    for name, value in (("batch", batch), ("seq_len", seq_len), ("rank", rank)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}: must be a positive integer.")
    for name, value in (("kv_rows", kv_rows), ("kv_tokens", kv_tokens)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}={value!r}: must be a whole number (0: no generation).")
    if device not in ("cuda", "cpu"):
        raise ValueError(f"device={device!r}: use 'cuda' or 'cpu'.")
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size={world_size!r}: the number of processes, a positive integer (2 for two Sparks).")
    if sharding not in SHARDING:
        raise ValueError(f"sharding={sharding!r}: use 'full_shard' (FSDP) or 'no_shard' (plain data parallel).")
    if lm_head not in LM_HEADS:
        raise ValueError(f"lm_head={lm_head!r}: use 'full' (the loss reads the logits) or 'chunked' "
                         "(TRL's SFTTrainer: the fused head, no full logits).")
    settings = {k: v for k, v in locals().items() if k not in ("name", "value")}
    arch = arch_spec(config_or_model_id)
    targets = _targets(arch, target_modules)
    counts, shapes = arch.param_counts(), arch.linear_shapes()
    w = DTYPES[dtype]
    autocast = dtype == "bf16" if autocast is None else autocast
    upcast = method == "qlora" and kbit_upcast
    res = 4 if upcast else w  # residual stream, norm outputs
    attn_b = 2 if autocast else res
    mlp_b = res if upcast else (2 if autocast else w)  # bnb casts its output back to the fp32 input dtype
    tokens = batch * seq_len

    if method == "qlora":
        other = counts["embeddings"] + counts["lm_head"] + counts["norms"] + counts["biases"]
        weights = counts["linear"] * NF4_BYTES + other * (4 if upcast else w)
    else:
        weights = arch.n_params * w
    lora_params = 0 if method == "full" else arch.layers * rank * sum(sum(shapes[m]) for m in targets)
    trainable = arch.n_params if method == "full" else lora_params
    adapter_b = 2 if method == "qlora" else 4  # TRL casts a quantized model's adapter to bf16
    p_bytes = w if method == "full" else adapter_b
    state = OPTIMIZERS[optimizer]
    dropout = ("bool" if device == "cuda" else "dtype") if lora_dropout > 0 and method != "full" else ""
    per_layer = _layer_bytes(arch, method, targets, rank, res, attn_b, mlp_b, autocast, dropout, adapter_b)
    per_head = 4 * arch.hidden + 4 + (2 * res * arch.hidden if method == "full" else 0)
    stored = arch.layers * (res * arch.hidden if gradient_checkpointing else per_layer)
    activations = tokens * (stored + per_head + (per_layer if gradient_checkpointing else 0))
    packed_mask = (5 if gradient_checkpointing else 4 * arch.layers) * tokens**2 if packed else 0
    activations += packed_mask
    workspace = 2 * lora_params if autocast and adapter_b == 4 else 0  # bf16 copies of fp32 adapters
    if upcast and autocast:
        workspace += 2 * arch.vocab * arch.hidden  # bf16 copy of the fp32 lm_head
    if method == "qlora":
        workspace += 2 * max(i * o for i, o in shapes.values())
    if method == "full" and autocast and w == 4:
        workspace += 2 * counts["linear"]
    gradients = trainable * p_bytes
    optimizer_states = int(trainable * (2 * p_bytes if state is None else state))
    weights, lora, communication = int(weights), lora_params * adapter_b, 0
    ref_bytes = (weights if method == "full" else lora) if reference else 0
    kv_b = 2 if method == "qlora" else w  # the cache is in the compute dtype (bf16 for a 4-bit model)
    kv_cache = 2 * arch.layers * arch.kv_heads * arch.head_dim * kv_b * kv_rows * kv_tokens
    units = _unit_bytes(arch, method, w, upcast, lora_params)
    if world_size > 1 and sharding == "full_shard":  # each rank keeps 1/N; one unit is gathered at a time
        weights, lora, gradients, optimizer_states = (math.ceil(x / world_size) for x in
                                                      (weights, lora, gradients, optimizer_states))
        communication = max(units.values())
    elif world_size > 1:  # DDP: all replicated, plus the reducer's gradient buckets
        communication = gradients
    return MemoryPlan(
        model=arch.name, method=method, dtype=dtype, batch=batch, seq_len=seq_len, rank=rank,
        gradient_checkpointing=gradient_checkpointing, optimizer=optimizer, n_params=arch.n_params,
        trainable_params=trainable, weights=weights, lora=lora, gradients=gradients,
        optimizer_states=optimizer_states, communication=communication, world_size=world_size,
        reference=int(ref_bytes), kv_cache=int(kv_cache),
        sharding=sharding if world_size > 1 else "none",
        activations=int(activations), logits=_logit_bytes(arch, lm_head, tokens, device, autocast, res),
        workspace=int(workspace), overhead=CUDA_CONTEXT_BYTES if device == "cuda" else 0,
        details={"activation_bytes_per_token_per_layer": per_layer, "autocast": autocast, "lm_head": lm_head,
                 "packed_mask_bytes": packed_mask,
                 "kbit_upcast": upcast, "targets": list(targets), "arch": arch.as_dict(), "unit_bytes": units},
        settings={**settings, "config_or_model_id": arch},
    )


def _logit_bytes(arch: ArchSpec, lm_head: str, tokens: int, device: str, autocast: bool, head_b: int) -> int:
    """Peak bytes of the LM head and its loss, forward and backward (see the module docstring)."""
    if lm_head == "full":
        return LOGIT_BYTES_PER_VOCAB * arch.vocab * tokens
    tile = min(tokens, CHUNK_TOKENS) * min(arch.vocab, CHUNK_VOCAB)
    if device == "cpu":
        return CHUNKED_TILE_BYTES_CPU * tile
    compute_b = 2 if autocast else head_b
    weight_copy = 2 * min(arch.vocab, CHUNK_VOCAB) * arch.hidden if autocast and head_b == 4 else 0
    return compute_b * tile + weight_copy + 6 * arch.hidden * tokens


def _replan(plan: MemoryPlan, **changes: Any) -> MemoryPlan:
    return plan_memory(**{**plan.settings, **changes})


# --------------------------------------------------------------------------------------------- plot
def plot_memory(plan: MemoryPlan, measured: int | float | MemoryTracker | None = None, ax: Any = None,
                capacity: int | None = None) -> Any:
    """Stacked bar of the plan's components next to the measured peak (bytes or a ``MemoryTracker``)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    bottom = 0.0
    colors = plt.get_cmap("tab10").colors
    for i, (name, value) in enumerate(plan.breakdown().items()):
        if value <= 0:
            continue
        ax.bar("plan", value / GB, bottom=bottom, color=colors[i % 10], label=name.replace("_", " "))
        bottom += value / GB
    if measured is not None:
        peak = float(getattr(measured, "peak", measured))  # a MemoryTracker or bytes
        ax.bar("measured peak", peak / GB, color="0.35")
        ax.text(1, peak / GB, f"{peak / GB:.2f}", ha="center", va="bottom")
    ax.text(0, bottom, f"{bottom:.2f}", ha="center", va="bottom")
    if capacity:
        ax.axhline(capacity / GB, color="red", linestyle="--", label=f"capacity {capacity / GB:.0f} GB")
    ax.set_ylabel("GB")
    ax.set_title(f"{plan.model}: {plan.method} {plan.dtype}, batch {plan.batch} x {plan.seq_len}")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax
