"""The before/after evaluation every preference lab (06-09) shares: score held-out pairs, compare, show, save.

Each lab keeps what is its own (the method's idea, its config, trainer, curves and loss by hand) and calls

    before = score_heldout(model, tokenizer, heldout, lab)          # before training
    after = score_heldout(trainer.model, tokenizer, heldout, lab)   # after
    result = compare("dpo", before, after, heldout)                 # pairs improved, per kind, plots, row

A pair "improved" when its margin (log p(chosen) - log p(rejected), summed or per token) grew: a per-pair
measure that one outlier cannot decide, unlike a mean over pairs. Pairs are also split by what is wrong
with the rejected answer (``task.rejected_kind``): a format or a wrong lab can be learnt from other
questions, a wrong fact only from knowing the topic.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from labhelpers import evaluation, task
from labhelpers.models import generate
from labhelpers.results import result_row

MEASURES = {"summed": ("margin", "accuracy"), "per_token": ("margin_per_token", "accuracy_per_token"),
            "odds_ratio": ("log_odds_ratio", "accuracy_per_token")}  # same sign as the per-token margin
_NAMES = {"accuracy": "preference accuracy", "margin": "mean margin (nats)",
          "accuracy_per_token": "per-token accuracy", "margin_per_token": "per-token margin (nats/token)",
          "log_odds_ratio": "mean log odds ratio",
          "chosen_logp": "log p(chosen)", "rejected_logp": "log p(rejected)"}


def scoring_code_hash() -> str:
    """The hash of the code behind a cached score (``evaluation``, ``task``, ``generate``, ``score_heldout``)."""
    return evaluation.source_hash(evaluation, task, generate, score_heldout)


@dataclass
class HeldoutScores:
    """One model's scores on the held-out pairs and its greedy answers to the first few prompts."""

    pairs: list[dict[str, float]]
    answers: list[str]
    task: dict[str, Any]

    @property
    def summary(self) -> dict[str, float]:
        """Means over the pairs (``evaluation.summarize_pairs``)."""
        return evaluation.summarize_pairs(self.pairs)


def score_heldout(model: Any, tokenizer: Any, heldout: Any, lab: Any, n_show: int = 4,
                  batch_size: int = 16, cache: bool = True) -> HeldoutScores:
    """Score every held-out pair (answer tokens only, chat template) and answer the first ``n_show`` prompts.

    With ``cache``, the scores are kept in ``outputs/<profile>/cache/preference/`` under a key made of the
    weights' fingerprint, the pairs and the settings: labs 06-09 start from the same model, so the first lab
    scores it and the others read the same numbers back (said in one printed line). Trained weights have
    another fingerprint, so scores after training are always computed.
    """
    rows = list(heldout)
    show = rows[:n_show]

    def compute() -> dict[str, Any]:
        pairs = evaluation.preference_pairs(model, tokenizer, rows, batch_size=batch_size, max_length=lab.max_length)
        answers = generate(model, tokenizer, [r["prompt"] for r in show], max_new_tokens=lab.eval_max_new_tokens)
        return {"pairs": pairs, "answers": answers, "task": task.task_metrics(answers, task.expected_labs(show))}

    key = [scoring_code_hash(), evaluation.weights_fingerprint(model), getattr(tokenizer, "name_or_path", ""), rows,
           lab.max_length, n_show, lab.eval_max_new_tokens]
    return HeldoutScores(**(evaluation.cached(lab, "preference", key, compute, f"{len(rows)} pairs") if cache
                            else compute()))


@dataclass
class StartingPoint:
    """The model a preference lab trains, the LoRA config to give the trainer (None: keep training an
    adapter already on the model) and a one-line description of where it starts."""

    model: Any
    peft_config: Any
    description: str
    memory_before: Any  # report_memory() before the weights were loaded


def load_starting_model(lab: Any, from_lab03: bool = False) -> StartingPoint:
    """Load the profile's instruct model (or, with ``from_lab03``, lab 03's SFT adapter on it) with memory bookends.

    Prints memory before/after loading and the weights' size; without lab 03's adapter on disk it says so and
    starts from the instruct model (never required).
    """
    from labhelpers.memory import report_memory
    from labhelpers.models import count_parameters, load_model
    from labhelpers.training import lora_config

    mem_start = report_memory()  # libraries imported, no weights loaded yet
    model = load_model()
    peft_config = lora_config(lab)
    description = "the instruct model"
    lab03 = lab.output_dir / "03_lora_sft" / "adapter"
    if from_lab03 and (lab03 / "adapter_config.json").is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(lab03), is_trainable=True)
        peft_config = None  # the trainer keeps training lab 03's adapter instead of adding a new one
        description = f"lab 03's SFT adapter ({lab03})"
    elif from_lab03:
        print(f"No adapter at {lab03} (run lab 03 first): starting from the instruct model.")
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    print(f"start: {description}; {count_parameters(model)['total'] / 1e6:,.0f} M parameters, "
          f"{weight_bytes / 1e9:.2f} GB of weights ({next(model.parameters()).dtype})")
    print("memory before loading:", mem_start)
    print("memory after loading :", report_memory())
    return StartingPoint(model, peft_config, description, mem_start)


@contextmanager
def count_passes(model: Any) -> Iterator[dict[str, int]]:
    """Count the backbone's forward passes inside the block: ``with_grad`` (policy, trained) and ``no_grad``
    (a reference pass, evaluation, or a policy pass not trained through, as KTO's for its KL estimate), and
    ``adapter_off`` (passes with the LoRA adapter disabled: the reference of ``ref_model=None`` trainers).
    A PEFT model's base decoder is hooked, so every pass is seen."""
    import torch

    counts = {"with_grad": 0, "no_grad": 0, "adapter_off": 0}
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = base.get_decoder() if hasattr(base, "get_decoder") else base
    lora = next((m for m in backbone.modules() if hasattr(m, "disable_adapters") and hasattr(m, "lora_A")), None)

    def hook(module: Any, args: Any, kwargs: Any) -> None:
        counts["with_grad" if torch.is_grad_enabled() else "no_grad"] += 1
        counts["adapter_off"] += bool(lora is not None and lora.disable_adapters)

    handle = backbone.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield counts
    finally:
        handle.remove()


def _share(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else math.nan


@dataclass
class PreferenceComparison:
    """Before vs after on the same held-out pairs; ``measure`` is the margin the method optimises."""

    method: str
    before: HeldoutScores
    after: HeldoutScores
    heldout: list[dict[str, Any]]
    measure: str = "summed"

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise ValueError(f"compare: measure must be one of {sorted(MEASURES)}, got {self.measure!r}.")
        if len(self.before.pairs) != len(self.after.pairs) or len(self.before.pairs) != len(self.heldout):
            raise ValueError(f"compare: before has {len(self.before.pairs)} pairs, after {len(self.after.pairs)}, "
                             f"the held-out set {len(self.heldout)}: score the same pairs before and after.")
        self.kinds = [task.rejected_kind(row, i) for i, row in enumerate(self.heldout)]

    @property
    def margin_key(self) -> str:
        return MEASURES[self.measure][0]

    @property
    def accuracy_key(self) -> str:
        return MEASURES[self.measure][1]

    def grew(self) -> list[bool]:
        """Per pair: did its margin grow?"""
        key = self.margin_key
        return [a[key] > b[key] for a, b in zip(self.after.pairs, self.before.pairs, strict=True)]

    @property
    def improved(self) -> float:
        """Share of held-out pairs whose margin grew."""
        return _share(self.grew())

    def improved_in(self, kind: str) -> float:
        """Share of the pairs of one kind of rejected answer (``task.REJECTED_KINDS``) whose margin grew."""
        if kind not in task.REJECTED_KINDS:
            raise ValueError(f"improved_in: kind must be one of {sorted(task.REJECTED_KINDS)}, got {kind!r}.")
        flags = [g for g, k in zip(self.grew(), self.kinds, strict=True) if k == kind]
        if not flags:
            raise ValueError(f"improved_in: none of the {len(self.kinds)} held-out pairs is of kind {kind!r} "
                             "(are chosen and rejected the right way round? score more pairs).")
        return _share(flags)

    def accuracy(self, when: str, kind: str | None = None) -> float:
        """Share of pairs (of one ``kind``, or all) where the chosen answer scores above the rejected one."""
        pairs = self.before.pairs if when == "before" else self.after.pairs
        key = self.margin_key
        return _share([p[key] > 0 for p, k in zip(pairs, self.kinds, strict=True) if kind in (None, k)])

    def by_kind(self) -> Any:
        """Per kind of rejected answer: pairs, accuracy before/after and the share of pairs improved."""
        import pandas as pd

        grew = self.grew()
        rows = {}
        for kind, label in task.REJECTED_KINDS.items():
            flags = [g for g, k in zip(grew, self.kinds, strict=True) if k == kind]
            if flags:
                rows[label] = {"pairs": len(flags), "accuracy before": self.accuracy("before", kind),
                               "accuracy after": self.accuracy("after", kind), "pairs improved": _share(flags)}
        rows["all"] = {"pairs": len(grew), "accuracy before": self.accuracy("before"),
                       "accuracy after": self.accuracy("after"), "pairs improved": self.improved}
        return pd.DataFrame(rows).T.astype({"pairs": int}).round(3)

    def table(self) -> Any:
        """Means before / after / change: accuracy and margin (summed and per token), log-probs, task."""
        import pandas as pd

        before, after = self.before.summary, self.after.summary
        frame = pd.DataFrame({"before": [before[k] for k in _NAMES], "after": [after[k] for k in _NAMES]},
                             index=list(_NAMES.values()))
        for metric, label in (("format_rate", "task: format rate"), ("lab_accuracy", "task: right lab")):
            frame.loc[f"{label} ({self.before.task['n']} answers)"] = [self.before.task[metric],
                                                                        self.after.task[metric]]
        frame["change"] = frame["after"] - frame["before"]
        return frame.round(3)

    def plot(self) -> Any:
        """Accuracy per kind before/after, and each pair's margin before vs after (green: grew)."""
        import matplotlib.pyplot as plt

        fig, (ax_kind, ax_pairs) = plt.subplots(1, 2, figsize=(11, 3.8))
        kinds = self.by_kind()
        x = range(len(kinds))
        ax_kind.bar([i - 0.2 for i in x], kinds["accuracy before"], width=0.4, color="#bbbbbb", label="before")
        ax_kind.bar([i + 0.2 for i in x], kinds["accuracy after"], width=0.4, color="#1f77b4", label="after")
        ax_kind.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax_kind.set(title=f"held-out accuracy by kind of rejected answer ({self.measure})", xticks=list(x),
                    xticklabels=[k.replace(" or ", "/\n") for k in kinds.index], ylim=(0, 1.05))
        ax_kind.legend(loc="upper left")
        key = self.margin_key
        xs, ys = [p[key] for p in self.before.pairs], [p[key] for p in self.after.pairs]
        ax_pairs.scatter(xs, ys, s=14, color=["#2ca02c" if g else "#d62728" for g in self.grew()])
        low, high = min(xs + ys), max(xs + ys)
        ax_pairs.plot([low, high], [low, high], color="grey", lw=0.8)  # on the line: the pair did not move
        ax_pairs.axhline(0.0, color="grey", lw=0.8, ls="--")
        ax_pairs.axvline(0.0, color="grey", lw=0.8, ls="--")
        unit = {"summed": "nats", "per_token": "nats/token", "odds_ratio": "log odds ratio"}[self.measure]
        ax_pairs.set(title=f"each held-out pair's margin (green: grew, {self.improved:.0%})",
                     xlabel=f"before ({unit})", ylabel=f"after ({unit})")
        fig.suptitle(f"{self.method.upper()}: before vs after training")
        fig.tight_layout()
        plt.show()
        return fig

    def side_by_side(self) -> Any:
        """Greedy answers to the first held-out prompts before and after; reference: the chosen answer."""
        show = self.heldout[: len(self.before.answers)]
        return evaluation.side_by_side([r["prompt"] for r in show], self.before.answers, self.after.answers,
                                       reference=[task.reference_answer(r) for r in show])

    def report(self) -> None:
        """Print the headline and show the tables, the plot and the answers (what every lab displays)."""
        from IPython.display import display

        print(f"{self.method.upper()} on {len(self.kinds)} held-out pairs, margin {self.measure}: "
              f"{self.improved:.1%} of pairs improved; accuracy {self.accuracy('before'):.3f} -> "
              f"{self.accuracy('after'):.3f}")
        display(self.by_kind())
        display(self.table())
        self.plot()
        display(self.side_by_side())

    def row(self, summary: Any = None, **extra: Any) -> dict[str, Any]:
        """The result row for ``save_result``: measured figures only (non-finite or missing ones left out)."""
        before, after = self.before.summary, self.after.summary
        row: dict[str, Any] = {
            "method": self.method, "measure": self.measure, "eval_pairs": len(self.kinds),
            "accuracy_before": self.accuracy("before"), "accuracy_after": self.accuracy("after"),
            "margin_before": before[self.margin_key], "margin_after": after[self.margin_key],
            "pairs_improved": self.improved,
            "format_rate_before": self.before.task["format_rate"], "format_rate_after": self.after.task["format_rate"],
        }
        for kind in task.REJECTED_KINDS:
            if kind in self.kinds:
                row[f"accuracy_{kind}_before"] = self.accuracy("before", kind)
                row[f"accuracy_{kind}_after"] = self.accuracy("after", kind)
        return result_row(row, summary, **extra)


def compare_heldout(method: str, before: HeldoutScores, after: HeldoutScores, heldout: Any,
            measure: str = "summed") -> PreferenceComparison:
    """Compare a method's held-out scores before and after training on the margin it optimises (``measure``):
    "summed" (DPO, KTO), "per_token" (SimPO) or "odds_ratio" (ORPO's log odds ratio)."""
    return PreferenceComparison(method, before, after, list(heldout), measure)
