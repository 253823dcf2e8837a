"""Training schedules sized to the data: epochs over the shipped rows -> optimizer steps, computed and printed.

The full profile states *epochs* (``Profile.sft_epochs``, ``Profile.pref_epochs``); the number of optimizer
steps follows from the rows a lab trains on, their token counts through the model's own chat template,
and the batch: ``steps = ceil(epochs x rows per epoch / (batch x accumulation))``. For SFT a "row" is a
packed row of ``max_length`` tokens (TRL's best-fit-decreasing packing, reproduced by ``pack_rows``); for
the preference methods it is one pair (DPO, SimPO, ORPO) or one thumbs-up/down row (KTO).

The smoke profile keeps its measured step counts (``sft_steps``, ``pref_steps``: every lab under 90 s on
2 cores) and the schedule only reports which fraction of an epoch they are.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from .profiles import Profile

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
    from .evaluation import _split_row, chat_tokens

    if kind == "sft":
        return [len(chat_tokens(tokenizer, *_split_row(row, i))[0]) for i, row in enumerate(rows)]
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
    from .evaluation import _split_row, chat_tokens

    g = lab.grpo_settings()
    prompts = [sum(1 for m in chat_tokens(tokenizer, *_split_row(row, i))[1] if m == 0) for i, row in enumerate(rows)]
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
    from .data import load_lab_dataset

    limit = {"sft": lab.sft_train_rows, "preference": lab.pref_train_rows, "kto": lab.kto_train_rows,
             "grpo": lab.sft_train_rows}[kind]
    if rows is None:
        rows = load_lab_dataset("sft" if kind == "grpo" else kind, limit=limit)
    if tokenizer is None:
        from .models import load_tokenizer

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
