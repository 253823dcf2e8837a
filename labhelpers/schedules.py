"""Training schedules sized to the data: epochs over the shipped rows -> optimizer steps, computed and printed.

The full profile states *epochs* (``Profile.sft_epochs``, ``Profile.pref_epochs``); the number of optimizer
steps follows from the rows a lab trains on, their token counts through the model's own chat template,
and the batch: ``steps = ceil(epochs x rows per epoch / (batch x accumulation))``. For SFT a "row" is a
packed row of ``max_length`` tokens (TRL's best-fit-decreasing packing, reproduced by ``pack_rows``); for
the preference methods it is one pair (DPO, SimPO, ORPO) or one thumbs-up/down row (KTO).

The smoke profile keeps its measured step counts (``sft_steps``, ``pref_steps``: every lab under 90 s on
2 cores) and the schedule only reports which fraction of an epoch they are.

Then time, estimated before a run from its plan and compared with the measured time afterwards:

    estimate = trained tokens x FLOPs per token / (peak FLOP/s x utilisation)

- **trained tokens**: ``labhelpers.schedules`` (steps x tokens per step, counted through the chat template).
- **FLOPs per token**: 2 per matmul parameter for a forward pass (decoder projections plus the output
  layer; an embedding lookup costs none). A LoRA step with a frozen base runs the forward and the input
  gradients, 4 per parameter (a full fine-tune adds weight gradients: 6); gradient checkpointing runs the
  forward again (+2). DPO adds a forward pass of the reference (+2); KTO three passes without gradients (the
  reference on the batch and on its mismatched KL rows, and the policy on those KL rows, TRL's
  ``_compute_kl_logps``: +6); SimPO and ORPO have no reference.
- **attention**: per token and layer, 4 x heads x head_dim x the span it attends over (Q K^T and the weighted
  sum of V), three times per step (forward, and the gradients of Q, K and V) plus every extra forward. The span
  is the schedule's ``seq_len``: padding-free packing makes a forward pass's rows one sequence and SDPA's
  block-diagonal mask computes every score of it (the whole length); an unpacked, causal sequence half of it.
- **peak FLOP/s**: on a DGX Spark (a GB10), NVIDIA's published figure: "up to 1 PFLOP of FP4 AI performance"
  with sparsity (https://www.nvidia.com/en-us/products/workstations/dgx-spark/); dense BF16 on Blackwell
  tensor cores is 1/8 of it (sparsity 2x, FP4 -> FP8 2x, FP8 -> BF16 2x) = 125 TFLOP/s. On another GPU and
  on a CPU, a matmul measured on the spot (bf16 on a GPU; fp32 at the model's MLP shape on a CPU).
- **utilisation**: an assumed range, printed with the estimate, which the measured time then checks;
  ``bench/gpu_throughput.py`` measures it on a GPU (its ``hfu``). 4-bit layers de-quantise every block on
  every matmul, so QLoRA's range is lower.
"""

from __future__ import annotations

import bisect
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from labhelpers.arch import arch_spec
from labhelpers.profiles import Profile

KINDS = ("sft", "preference", "kto", "grpo")


@dataclass(frozen=True)
class Schedule:
    """How much a training run sees: rows, tokens, steps and epochs, all computed from the data."""

    kind: str
    examples: int  # rows of the dataset file the lab trains on
    tokens: int  # tokens in one pass over them (prompt + answer; both answers of a pair)
    rows_per_epoch: int  # packed rows (SFT) or examples (preference, KTO) in one pass
    per_step: int  # rows per optimizer step: batch x gradient accumulation
    steps: int
    epochs: float
    max_length: int
    stated_epochs: float | None  # the profile's epochs (full); None: the profile fixed the steps (smoke)
    packed: bool = False  # SFT examples packed into rows of max_length tokens
    forward_rows: int = 1  # packed rows in one forward pass: padding-free packing makes them one sequence
    group: int = 1  # GRPO: completions per prompt (each a sequence with the prompt in front)

    @property
    def seq_len(self) -> float:
        """Mean tokens in one attention sequence: a forward pass's packed rows (one padding-free sequence), one
        example (unpacked SFT, KTO), or one answer of a pair (preference). What the attention's cost grows with."""
        if self.packed:
            return self.forward_rows * self.tokens / self.rows_per_epoch
        return self.tokens / (self.examples * (2 if self.kind == "preference" else self.group))

    @property
    def tokens_per_step(self) -> float:
        """Tokens one optimizer step processes (the average over the epoch)."""
        return self.tokens / self.rows_per_epoch * self.per_step

    @property
    def trained_tokens(self) -> int:
        """Tokens the whole run processes: steps x tokens per step (= epochs x tokens per epoch)."""
        return round(self.steps * self.tokens_per_step)

    def with_steps(self, steps: int) -> Schedule:
        """The same data and batch for another number of steps (e.g. lab 04's two shorter runs)."""
        return replace(self, steps=steps, epochs=steps * self.per_step / self.rows_per_epoch, stated_epochs=None)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tokens_per_step": self.tokens_per_step, "trained_tokens": self.trained_tokens,
                "seq_len": self.seq_len}

    def __str__(self) -> str:
        unit = f"packed rows of {self.max_length} tokens" if self.packed else (
            "pairs" if self.kind == "preference" else
            f"prompts, {self.group} completions each" if self.kind == "grpo" else "rows, one example each")
        how = ("steps fixed by the smoke profile: every lab under 90 s on 2 cores" if self.stated_epochs is None
               else f"the profile states {self.stated_epochs:g} epoch{'' if self.stated_epochs == 1 else 's'}; "
                    "steps rounded up")
        return (f"schedule ({self.kind}): {self.examples} examples, {self.tokens:,} tokens per epoch -> "
                f"{self.rows_per_epoch} {unit}; {self.steps} steps x {self.per_step} per step = "
                f"{self.epochs:.2f} epochs, {self.trained_tokens:,} tokens ({how})")


def pack_rows(lengths: list[int], max_length: int) -> int:
    """How many rows of ``max_length`` tokens best-fit-decreasing packing fills (TRL's ``packing_strategy="bfd"``).

    Longest example first, each into the fullest row it still fits; an example longer than ``max_length``
    is truncated to it (as TRL does), so it fills a row alone.
    """
    if max_length < 1:
        raise ValueError(f"max_length={max_length!r}: must be a positive integer.")
    free: list[int] = []  # free space of the open rows, sorted ascending
    for n in sorted((min(n, max_length) for n in lengths), reverse=True):
        i = bisect.bisect_left(free, n)
        if i < len(free):
            space = free.pop(i) - n
        else:
            space = max_length - n
        bisect.insort(free, space)
    return len(free)


def token_counts(kind: str, rows: Any, tokenizer: Any) -> list[int]:
    """Tokens per example through the chat template: prompt + answer (SFT, KTO), or both sequences of a pair."""
    from labhelpers.evaluation import chat_tokens, split_row

    if kind == "sft":
        return [len(chat_tokens(tokenizer, *split_row(row, i))[0]) for i, row in enumerate(rows)]
    if kind == "preference":
        return [len(chat_tokens(tokenizer, r["prompt"], r["chosen"])[0])
                + len(chat_tokens(tokenizer, r["prompt"], r["rejected"])[0]) for r in rows]
    if kind == "kto":
        return [len(chat_tokens(tokenizer, r["prompt"], r["completion"])[0]) for r in rows]
    if kind == "grpo":  # a prompt's group: each completion re-reads the prompt; completions capped, not measured
        raise ValueError("token_counts('grpo', ...) needs the GRPO settings: use schedule(lab, 'grpo').")
    raise ValueError(f"kind={kind!r}: use one of {KINDS}.")


_CACHE: dict[tuple, Schedule] = {}


def _grpo_schedule(lab: Profile, rows: Any, tokenizer: Any) -> Schedule:
    """GRPO: a row is a prompt; each of its ``generations`` completions (at most ``completion_tokens``) is trained
    on with the prompt in front, so one pass costs generations x (prompt + completion cap) tokens (an upper bound:
    a completion that stops early is shorter)."""
    from labhelpers.evaluation import chat_tokens, split_row

    g = lab.grpo_settings()
    prompts = [sum(1 for m in chat_tokens(tokenizer, *split_row(row, i))[1] if m == 0) for i, row in enumerate(rows)]
    tokens = sum(g.generations * (n + g.completion_tokens) for n in prompts)
    if g.steps is None and g.epochs is None:
        raise ValueError(f"profile {lab.name!r} states neither steps nor epochs for GRPO.")
    steps = g.steps if g.steps is not None else max(1, math.ceil(g.epochs * len(rows) / g.prompts_per_step))
    return Schedule(kind="grpo", examples=len(rows), tokens=tokens, rows_per_epoch=len(rows),
                    per_step=g.prompts_per_step, steps=steps, epochs=steps * g.prompts_per_step / len(rows),
                    max_length=max(prompts) + g.completion_tokens,
                    stated_epochs=None if g.steps is not None else g.epochs, group=g.generations)


def schedule(lab: Profile, kind: str = "sft", tokenizer: Any = None, rows: Any = None, packed: bool = True,
             verbose: bool = True) -> Schedule:
    """The run's schedule for ``kind`` ("sft", "preference" or "kto"), computed from the shipped rows.

    ``rows`` defaults to the profile's slice of the shipped training file; ``tokenizer`` to the profile's
    model's tokenizer (``load_tokenizer()``). ``packed=False``: SFT without packing (one example per row, as
    lab 04 trains). Full profile: steps from the stated epochs. Smoke: the
    profile's fixed steps, and the epochs they amount to.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: use one of {KINDS}.")
    from labhelpers.data import load_lab_dataset

    limit = {"sft": lab.sft_train_rows, "preference": lab.pref_train_rows, "kto": lab.kto_train_rows,
             "grpo": lab.sft_train_rows}[kind]
    if rows is None:
        rows = load_lab_dataset("sft" if kind == "grpo" else kind, limit=limit)
    if tokenizer is None:
        from labhelpers.models import load_tokenizer

        tokenizer = load_tokenizer()
    packed = packed and kind == "sft"
    key = (kind, packed, repr(lab), getattr(tokenizer, "name_or_path", id(tokenizer)), len(rows),
           repr(rows[0]) if len(rows) else "")
    if key not in _CACHE:
        if kind == "grpo":
            _CACHE[key] = _grpo_schedule(lab, rows, tokenizer)
        else:
            lengths = token_counts(kind, rows, tokenizer)
            per_row = lab.batch_size if kind == "sft" else lab.pref_batch_size
            per_step = per_row * lab.grad_accum
            rows_per_epoch = pack_rows(lengths, lab.max_length) if packed else len(lengths)
            fixed = lab.sft_steps if kind == "sft" else lab.pref_steps
            epochs_stated = lab.sft_epochs if kind == "sft" else lab.pref_epochs
            if fixed is None and epochs_stated is None:
                raise ValueError(f"profile {lab.name!r} states neither steps nor epochs for {kind}.")
            steps = fixed if fixed is not None else max(1, math.ceil(epochs_stated * rows_per_epoch / per_step))
            _CACHE[key] = Schedule(kind=kind, examples=len(lengths), tokens=sum(lengths),
                                   rows_per_epoch=rows_per_epoch, per_step=per_step, steps=steps,
                                   epochs=steps * per_step / rows_per_epoch, max_length=lab.max_length,
                                   stated_epochs=None if fixed is not None else epochs_stated, packed=packed,
                                   forward_rows=lab.sft_forward_rows if packed else 1)
    result = _CACHE[key]
    if verbose:
        print(result)
    return result


# ------------------------------------------------------------------------------------------------------- time
SPARK_BF16_FLOPS = 1e15 / 8
SPARK_SOURCE = ("DGX Spark (GB10): NVIDIA's published 1 PFLOP FP4 with sparsity / 8 = 125 TFLOP/s dense BF16 "
                "(nvidia.com/en-us/products/workstations/dgx-spark)")
# extra no-grad forwards per token; GRPO: +1 for the old policy's log-probs when one generation feeds several
# steps, +1 for the reference when beta > 0 (estimate_grpo_time adds them)
FORWARD_PASSES = {"sft": 0, "dpo": 1, "simpo": 0, "orpo": 0, "kto": 3, "grpo": 0}
UTILISATION = {"gpu": (0.2, 0.5), "gpu-4bit": (0.1, 0.35), "cpu": (0.25, 0.8)}


@dataclass(frozen=True)
class Throughput:
    """A peak FLOP/s, the utilisation range assumed on it, and where the peak comes from."""

    peak_flops: float
    utilisation: tuple[float, float]
    source: str


def _measured_matmul(device: str, n: int, k: int, m: int, dtype: Any, seconds: float = 0.1) -> float:
    """Best of three timings of an (n x k) @ (k x m) product, in FLOP/s."""
    import torch

    a = torch.randn(n, k, device=device, dtype=dtype)
    b = torch.randn(k, m, device=device, dtype=dtype)
    best = 0.0
    for _ in range(3):
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        start, reps = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            a @ b
            reps += 1
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n * k * m * reps / (time.perf_counter() - start))
    return best


def device_throughput(model: Any = None, quantized: bool = False, device: str | None = None) -> Throughput:
    """This machine's peak and utilisation range: a Spark's derived bf16 peak, or a matmul measured now."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        from labhelpers.memory import is_integrated_gpu

        name = torch.cuda.get_device_name(0)
        util = UTILISATION["gpu-4bit" if quantized else "gpu"]
        if "GB10" in name or is_integrated_gpu():
            return Throughput(SPARK_BF16_FLOPS, util, SPARK_SOURCE)
        peak = _measured_matmul("cuda", 8192, 8192, 8192, torch.bfloat16)
        return Throughput(peak, util, f"{name}: bf16 8192^3 matmul measured now, {peak / 1e12:.0f} TFLOP/s")
    hidden, inter = 576, 1536
    if model is not None:
        arch = arch_spec(model)
        hidden, inter = arch.hidden, arch.intermediate
    peak = _measured_matmul("cpu", 512, hidden, inter, torch.float32)
    return Throughput(peak, UTILISATION["cpu"],
                      f"CPU, {torch.get_num_threads()} threads: fp32 512x{hidden}x{inter} matmul (the model's MLP "
                      f"shape) measured now, {peak / 1e9:.0f} GFLOP/s")


def flops_per_token(model: Any, method: str = "sft", full_finetune: bool = False,
                    gradient_checkpointing: bool = False, attention_span: float = 0.0,
                    extra_forwards: int = 0) -> float:
    """Training FLOPs per token (see the module docstring): 2 x matmul parameters x passes, plus the attention
    over ``attention_span`` tokens (0: left out); ``extra_forwards`` no-grad passes on top of the method's."""
    if method not in FORWARD_PASSES:
        raise ValueError(f"method={method!r}: use one of {tuple(FORWARD_PASSES)}.")
    arch = arch_spec(model)
    counts = arch.param_counts()
    matmul = counts["linear"] + (counts["embeddings"] if arch.tied else counts["lm_head"])
    extra = (1 if gradient_checkpointing else 0) + FORWARD_PASSES[method] + extra_forwards
    passes = (3 if full_finetune else 2) + extra
    attention = 4 * arch.heads * arch.head_dim * arch.layers * attention_span * (3 + extra)
    return 2 * matmul * passes + attention


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _versus(measured_s: float, low_s: float, high_s: float) -> str:
    """The measured time and where it falls in an estimate's range."""
    where = "inside" if low_s <= measured_s <= high_s else "faster than" if measured_s < low_s else "slower than"
    return (f"measured {_duration(measured_s)} ({measured_s:.1f} s): {where} the estimate "
            f"{_duration(low_s)} to {_duration(high_s)}")


@dataclass(frozen=True)
class TimeEstimate:
    """A training run's time range, computed before it starts; ``versus()`` sets the measured time next to it."""

    label: str
    tokens: int
    flops_per_token: float
    flops: float
    low_s: float
    high_s: float
    throughput: Throughput

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        lo, hi = self.throughput.utilisation
        peak = self.throughput.peak_flops
        rate = f"{peak / 1e12:,.0f} TFLOP/s" if peak >= 1e12 else f"{peak / 1e9:,.0f} GFLOP/s"
        return (f"time estimate ({self.label}): {self.tokens:,} tokens x {self.flops_per_token / 1e9:,.2f} GFLOP "
                f"per token = {self.flops:.2e} FLOP, at {lo:.0%}-{hi:.0%} of {rate} "
                f"-> {_duration(self.low_s)} to {_duration(self.high_s)}\n"
                f"  peak: {self.throughput.source}")

    def versus(self, measured_s: float) -> str:
        """One line: the measured time, where it falls in the range, and the utilisation it implies."""
        used = self.flops / measured_s / self.throughput.peak_flops
        return f"{_versus(measured_s, self.low_s, self.high_s)}; utilisation {used:.0%} of the peak"


def estimate_time(plan: Schedule, model: Any, method: str = "sft", *, full_finetune: bool = False,
                  gradient_checkpointing: bool = False, quantized: bool = False,
                  throughput: Throughput | None = None, verbose: bool = True, extra_forwards: int = 0) -> TimeEstimate:
    """Estimate a run's time from its schedule and model (a loaded model, config or known name), as a range."""
    throughput = throughput or device_throughput(model, quantized=quantized)
    span = plan.seq_len if plan.packed else plan.seq_len / 2  # a block mask computes every score; causal half
    per_token = flops_per_token(model, method, full_finetune, gradient_checkpointing, attention_span=span,
                                extra_forwards=extra_forwards)
    flops = plan.trained_tokens * per_token
    lo, hi = throughput.utilisation
    label = method.upper() + (", 4-bit" if quantized else "") + (", checkpointing" if gradient_checkpointing else "")
    est = TimeEstimate(label=label, tokens=plan.trained_tokens, flops_per_token=per_token, flops=flops,
                       low_s=flops / (throughput.peak_flops * hi), high_s=flops / (throughput.peak_flops * lo),
                       throughput=throughput)
    if verbose:
        print(est)
    return est


# ----------------------------------------------------------------------------------- GRPO (lab 12)
@dataclass(frozen=True)
class GRPOTimeEstimate:
    """GRPO's time: sampling (decoding steps / a measured decode rate) plus the updates (a ``TimeEstimate``)."""

    generation_calls: int
    decode_steps: int  # per call: one new token for every row of the call
    decode_steps_per_s: float
    rate_source: str
    update: TimeEstimate

    @property
    def generation_s(self) -> float:
        return self.generation_calls * self.decode_steps / self.decode_steps_per_s

    @property
    def low_s(self) -> float:
        return self.generation_s + self.update.low_s

    @property
    def high_s(self) -> float:
        return self.generation_s + self.update.high_s

    def __str__(self) -> str:
        updates = str(self.update).split(": ", 1)[1]  # without its own "time estimate (...)" label
        return (f"time estimate (GRPO): generation {self.generation_calls} call(s) x {self.decode_steps} decoding "
                f"steps / {self.decode_steps_per_s:.1f} steps/s = {_duration(self.generation_s)}\n"
                f"  decode rate: {self.rate_source}\n"
                f"  updates: {updates}\n"
                f"  total: {_duration(self.low_s)} to {_duration(self.high_s)}")

    def versus(self, measured_s: float) -> str:
        """One line: the measured time and where it falls in the range."""
        return _versus(measured_s, self.low_s, self.high_s)


def estimate_grpo_time(plan: Schedule, model: Any, settings: Any, decode_steps_per_s: float, rate_source: str, *,
                       quantized: bool = False, throughput: Throughput | None = None,
                       verbose: bool = True) -> GRPOTimeEstimate:
    """GRPO's time before it runs: ``settings`` (``Profile.grpo``) fix the generation calls (steps /
    steps_per_generation) of ``completion_tokens`` decoding steps each (an upper bound: a call stops when every
    row has ended); the decode rate is measured (``SampledGroups``: steps per second at the same batch) and
    named in ``rate_source``. The updates are the schedule's tokens through ``estimate_time``, with the
    old-policy and reference forwards TRL adds."""
    if decode_steps_per_s <= 0:
        raise ValueError(f"decode_steps_per_s={decode_steps_per_s!r}: must be positive (measure it first).")
    extra = (1 if settings.steps_per_generation > 1 else 0) + (1 if settings.beta > 0 else 0)
    update = estimate_time(plan, model, "grpo", quantized=quantized, throughput=throughput, verbose=False,
                           extra_forwards=extra)
    est = GRPOTimeEstimate(generation_calls=math.ceil(plan.steps / settings.steps_per_generation),
                           decode_steps=settings.completion_tokens, decode_steps_per_s=decode_steps_per_s,
                           rate_source=rate_source, update=update)
    if verbose:
        print(est)
    return est
