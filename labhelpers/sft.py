"""The before/after evaluation every SFT lab (03-05) shares: score the held-out rows, compare, show, save.

Each lab keeps what is its own (its trainer, config, interruption, noise probe or memory plan) and calls

    before = score_sft(model, tokenizer, heldout, lab)           # before training
    after = score_sft(trainer.model, tokenizer, heldout, lab)    # after
    result = compare_sft("lora_sft", before, after, heldout)     # loss drop, task metric, plot, answers, row

Two measures on the same held-out rows: the **held-out loss** (``evaluation.heldout_loss``: mean negative
log-likelihood per answer token of the reference answers, the prompt masked as in training) and the **task
metric** of the greedy answers to the held-out prompts (``task.task_metrics``: the ``Answer:`` / ``Lab:`` format,
and the right lab).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from labhelpers import evaluation, task
from labhelpers.data import prompt_messages
from labhelpers.models import generate
from labhelpers.results import result_row


@dataclass
class SFTScores:
    """One model's scores on the held-out SFT rows."""

    loss: float  # mean negative log-likelihood per answer token (nats)
    answers: list[str]  # greedy answers to the first len(answers) held-out prompts
    metrics: dict[str, Any]  # task.task_metrics of those answers: n, format_rate, cited_rate, lab_accuracy
    rows: int  # held-out rows the loss was measured on

    @property
    def format_rate(self) -> float:
        return self.metrics["format_rate"]

    @property
    def lab_accuracy(self) -> float:
        return self.metrics["lab_accuracy"]


def scoring_code_hash() -> str:
    """The hash of the code behind a cached score (``evaluation``, ``task``, ``generate``, the prompt format and
    ``score_sft``)."""
    return evaluation.source_hash(evaluation, task, generate, prompt_messages, SFTScores, score_sft)


def score_sft(model: Any, tokenizer: Any, heldout: Any, lab: Any, n_show: int | None = None,
              cache: bool = True) -> SFTScores:
    """Held-out loss on every row, and greedy answers to the first ``n_show`` prompts (all: None) with their task
    metrics; ``lab.max_length`` tokens per row scored, ``lab.eval_max_new_tokens`` new tokens per answer.

    With ``cache``, the scores are kept in ``outputs/<profile>/cache/sft/`` under a key made of the weights'
    fingerprint, the rows and the settings: labs 03 and 04 start from the same model, so the first scores it and
    the other reads the same numbers back (said in one printed line). Trained weights have another fingerprint.
    """
    rows = list(heldout)
    if not rows:
        raise ValueError("score_sft: the held-out set is empty.")
    shown = rows if n_show is None else rows[:n_show]

    def compute() -> dict[str, Any]:
        loss = evaluation.heldout_loss(model, tokenizer, rows, max_length=lab.max_length)
        answers = generate(model, tokenizer, [prompt_messages(r) for r in shown],
                           max_new_tokens=lab.eval_max_new_tokens)
        return asdict(SFTScores(loss, answers, task.task_metrics(answers, task.expected_labs(shown)), len(rows)))

    key = [scoring_code_hash(), evaluation.weights_fingerprint(model), str(getattr(model, "device", "")),
           getattr(tokenizer, "name_or_path", ""), rows, lab.max_length, n_show, lab.eval_max_new_tokens]
    return SFTScores(**(evaluation.cached(lab, "sft", key, compute, f"{len(rows)} held-out rows") if cache
                        else compute()))


_METRICS = {"format_rate": "format rate", "lab_accuracy": "lab accuracy", "cited_rate": "cites a lab"}


@dataclass
class SFTComparison:
    """Before vs after training on the same held-out rows."""

    method: str
    before: SFTScores
    after: SFTScores
    heldout: list[dict[str, Any]]

    def __post_init__(self) -> None:
        counts = {"before": (self.before.rows, len(self.before.answers)),
                  "after": (self.after.rows, len(self.after.answers))}
        if counts["before"] != counts["after"] or self.before.rows != len(self.heldout):
            raise ValueError(f"compare_sft: before scored {counts['before'][0]} rows ({counts['before'][1]} answers), "
                             f"after {counts['after'][0]} ({counts['after'][1]} answers), the held-out set has "
                             f"{len(self.heldout)}: score the same rows before and after.")

    @property
    def loss_drop(self) -> float:
        """How much lower the held-out loss is after training, relative to before (negative: it rose)."""
        return (self.before.loss - self.after.loss) / self.before.loss

    def table(self) -> Any:
        """Held-out loss and task metrics before / after / change."""
        import pandas as pd

        n = self.before.metrics["n"]
        frame = pd.DataFrame(
            {"before": [self.before.loss, *(self.before.metrics[k] for k in _METRICS)],
             "after": [self.after.loss, *(self.after.metrics[k] for k in _METRICS)]},
            index=[f"held-out loss (nats per answer token, {self.before.rows} rows)",
                   *(f"{label} ({n} answers)" for label in _METRICS.values())])
        frame["change"] = frame["after"] - frame["before"]
        return frame.round(3)

    def plot(self) -> Any:
        """Held-out loss before/after, and the task metrics before/after (chance: a uniform guess of the lab)."""
        import matplotlib.pyplot as plt

        fig, (ax_loss, ax_task) = plt.subplots(1, 2, figsize=(10, 3.2))
        ax_loss.bar(["before", "after"], [self.before.loss, self.after.loss], color=["#bbbbbb", "#1f77b4"])
        ax_loss.set(title=f"held-out loss ({-self.loss_drop:+.0%})", ylabel="nats per answer token")
        names = ["format_rate", "lab_accuracy"]
        x = range(len(names))
        for offset, scores, label, colour in ((-0.2, self.before, "before", "#bbbbbb"),
                                              (0.2, self.after, "after", "#1f77b4")):
            ax_task.bar([i + offset for i in x], [scores.metrics[k] for k in names], width=0.4, label=label,
                        color=colour)
        lab_x = names.index("lab_accuracy")  # chance: a uniform guess among the labs
        ax_task.hlines(1 / len(task.LAB_NAMES), lab_x - 0.45, lab_x + 0.45, colors="grey", lw=0.8, ls="--",
                       label="chance")
        ax_task.set(title=f"task metric on {self.before.metrics['n']} held-out prompts", ylim=(0, 1.05),
                    xticks=list(x), xticklabels=[_METRICS[k] for k in names])
        ax_task.legend(loc="best")
        fig.suptitle(f"{self.method}: before vs after training")
        fig.tight_layout()
        plt.show()
        return fig

    def side_by_side(self, n: int = 4, width: int | None = None) -> Any:
        """Greedy answers to the first ``n`` held-out prompts before and after, next to the reference answer."""
        shown = self.heldout[: min(n, len(self.before.answers))]
        return evaluation.side_by_side([prompt_messages(r) for r in shown], self.before.answers[: len(shown)],
                                       self.after.answers[: len(shown)],
                                       reference=[task.reference_answer(r) for r in shown], width=width)

    def report(self) -> None:
        """Print the headline and show the table, the plot and the answers (what every SFT lab displays)."""
        from IPython.display import display

        print(f"{self.method} on {self.before.rows} held-out rows: loss {self.before.loss:.3f} -> "
              f"{self.after.loss:.3f} ({-self.loss_drop:+.0%}); format rate {self.before.format_rate:.2f} -> "
              f"{self.after.format_rate:.2f}; lab accuracy {self.before.lab_accuracy:.2f} -> "
              f"{self.after.lab_accuracy:.2f}")
        display(self.table())
        self.plot()
        display(self.side_by_side())

    def row(self, summary: Any = None, **extra: Any) -> dict[str, Any]:
        """The result row for ``save_result``: measured figures only (non-finite or missing ones left out);
        ``summary`` (a ``TrainSummary``) adds memory, time, throughput and steps, ``extra`` anything else."""
        row: dict[str, Any] = {
            "method": self.method, "eval_rows": self.before.rows,
            "heldout_loss_before": self.before.loss, "heldout_loss_after": self.after.loss,
            "format_rate_before": self.before.format_rate, "format_rate_after": self.after.format_rate,
            "lab_accuracy_before": self.before.lab_accuracy, "lab_accuracy_after": self.after.lab_accuracy,
        }
        return result_row(row, summary, **extra)


def compare_sft(method: str, before: SFTScores, after: SFTScores, heldout: Any) -> SFTComparison:
    """Compare a method's held-out scores before and after training (the same rows, scored by ``score_sft``)."""
    return SFTComparison(method, before, after, list(heldout))
