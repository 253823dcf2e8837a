"""Trainer callbacks the labs attach to TRL trainers: live loss plot, trained tokens per second, NaN guard,
and the embedding-noise probe of lab 04 (what NEFTune added to the embeddings during training).

All four are plain ``transformers.TrainerCallback`` objects, so they work with ``SFTTrainer``,
``DPOTrainer``, ``KTOTrainer`` and the experimental ``CPOTrainer`` / ``ORPOTrainer`` alike.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from transformers import TrainerCallback

REWARD_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margins")

NAN_ADVICE = """Training stopped: the {what} became {value} at step {step}.
The three usual causes, and what to try:
  1. Learning rate too high     -> lower it, e.g. learning_rate=1e-5 (keep warmup_steps=0.1).
  2. Empty sequences in the data -> check the data and truncation: a row whose prompt fills max_length
                                    leaves no tokens to learn from (look at max_length and the longest rows).
  3. Gradient explosion          -> clip the gradients: max_grad_norm=1.0 (the labhelpers presets set it).
No checkpoint was written for this step; the last good checkpoint (if any) is kept for resuming."""


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where display handles can update a figure in place)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class EmbeddingNoiseProbe(TrainerCallback):
    """Measure, at every training step, what was added to the input embeddings (NEFTune's noise, if any).

    Trainer.train() attaches NEFTune's forward hook before ``on_train_begin``, so the hook registered there runs
    after it and sees the noisy output; the clean embeddings are the same lookup without it (a gather: exact).
    ``ratios`` holds, per training-mode forward pass, max |noise| / (alpha / sqrt(L * d)) (L the batch's padded
    length, d the embedding width): 0.0 exactly without noise, at most 1 with it, close to 1 for any real batch.
    """

    def __init__(self, alpha: float) -> None:
        self.alpha, self.ratios, self._handle = alpha, [], None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        embed = model.get_input_embeddings()

        def record(module: Any, inputs: tuple, output: torch.Tensor) -> None:
            if module.training:
                clean = torch.nn.functional.embedding(inputs[0], module.weight)
                bound = self.alpha / math.sqrt(inputs[0].shape[1] * module.embedding_dim)
                self.ratios.append(float((output - clean).abs().max()) / bound)

        self._handle = embed.register_forward_hook(record)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


class NanGuardCallback(TrainerCallback):
    """Stop training at the first NaN/inf loss or gradient norm, and say why it usually happens."""

    def __init__(self, verbose: bool = True) -> None:
        self.verbose = verbose
        self.tripped = False
        self.message = ""

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "grad_norm"):
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                self.tripped = True
                what = "training loss" if key == "loss" else "gradient norm"
                self.message = NAN_ADVICE.format(what=what, value=value, step=state.global_step)
                control.should_training_stop = True
                control.should_save = False  # never checkpoint NaN weights: resume must start from good ones
                if self.verbose:
                    print(self.message)
                break
        return control


class ThroughputCallback(TrainerCallback):
    """Count the non-pad tokens the model trains on and the seconds the optimizer steps take.

    Tokens are counted by a forward pre-hook on the model, only for forwards that build a graph
    (training mode, grad enabled), so a DPO/KTO reference pass under ``no_grad`` is not counted. A batch
    with an ``attention_mask`` counts its ones; a padding-free batch (no mask) has no padding and counts
    every token. Time is the sum of step durations (logging and checkpoint saving excluded);
    ``skip_first`` steps (one-time warm-up costs) are left out of both.
    """

    def __init__(self, skip_first: int = 0) -> None:
        self.skip_first = skip_first
        self._seen = 0
        self.tokens = 0  # non-pad tokens through forward + backward
        self.slots = 0  # tensor positions, padding included
        self.loss_tokens = 0  # tokens with a label (the ones the loss is computed on), when labels are passed
        self.seconds = 0.0
        self.steps = 0
        self._t0: float | None = None
        self._handle: Any = None

    def _hook(self, module, args, kwargs):
        if not module.training or not torch.is_grad_enabled():
            return
        ids = kwargs.get("input_ids")
        if ids is None and args:
            ids = args[0]
        if not isinstance(ids, torch.Tensor):
            return
        mask = kwargs.get("attention_mask")
        self.slots += ids.numel()
        self.tokens += int(mask.sum()) if isinstance(mask, torch.Tensor) and mask.dim() == 2 else ids.numel()
        labels = kwargs.get("labels")
        if isinstance(labels, torch.Tensor):
            self.loss_tokens += int((labels != -100).sum())

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None and self._handle is None:
            self._handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._t0 is not None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.seconds += time.perf_counter() - self._t0
            self.steps += 1
            self._t0 = None
            self._seen += 1
            if self._seen <= self.skip_first:
                self.tokens = self.slots = self.loss_tokens = self.steps = 0
                self.seconds = 0.0

    def on_train_end(self, args, state, control, **kwargs):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @property
    def tokens_per_s(self) -> float:
        """Trained (non-pad) tokens per second of step time."""
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> dict[str, float]:
        """Tokens, step seconds, tokens/s and the fraction of tensor positions that were real tokens."""
        return {
            "trained_tokens": self.tokens,
            "loss_tokens": self.loss_tokens,
            "step_seconds": self.seconds,
            "steps_timed": self.steps,
            "tokens_per_s": self.tokens_per_s,
            "nonpad_fraction": self.tokens / self.slots if self.slots else float("nan"),
        }


class LivePlotCallback(TrainerCallback):
    """Plot the training loss (for preference trainers also the chosen/rejected rewards and margin) live.

    In a notebook the figure is updated in place through an IPython display handle (at most every
    ``min_interval`` seconds, and once more at the end); elsewhere each log becomes one text line.
    """

    def __init__(self, title: str = "training", min_interval: float = 5.0, notebook: bool | None = None,
                 panels: Sequence[str] | None = None) -> None:
        """``panels``: logged metrics to plot, one panel each (GRPO: ``"reward"``, ``"frac_reward_zero_std"``,
        ``"completions/mean_length"``...), instead of the loss and the preference rewards (one panel for the three,
        once a trainer logs them)."""
        self.title = title
        self.panels = [(key,) for key in panels] if panels else [("loss",), REWARD_KEYS]
        self.min_interval = min_interval
        self.notebook = in_notebook() if notebook is None else notebook
        self.history: dict[str, list[tuple[int, float]]] = {}
        self._handle: Any = None
        self._last_draw = 0.0
        self.figure: Any = None

    def on_train_begin(self, args, state, control, **kwargs):
        # Each train() call draws in the cell that runs it: a resumed run shows its (whole) curve there,
        # not by updating the plot of the interrupted run in a cell above, out of the learner's view.
        self._handle = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        step = state.global_step
        keys = [key for panel in self.panels for key in panel]
        for key in keys:
            value = logs.get(key)
            if isinstance(value, (int, float)):
                self.history.setdefault(key, []).append((step, float(value)))
        if not any(k in logs for k in keys):
            return
        if self.notebook:
            if time.monotonic() - self._last_draw >= self.min_interval:
                self.draw()
        else:
            print("  ".join([f"step {step:>5}"] + [f"{k} {logs[k]:.4f}" for k in keys if k in logs]), flush=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.notebook and self.history:
            self.draw()

    def draw(self) -> Any:
        """Render the current history into one figure (updated in place in a notebook); returns the figure."""
        import matplotlib.pyplot as plt

        panels = [p for p in self.panels if any(k in self.history for k in p)] or self.panels[:1]
        if self.figure is None or len(self.figure.axes) != len(panels):
            self.figure, _ = plt.subplots(1, len(panels), figsize=(2.2 + 3.3 * len(panels), 3.4))
            plt.close(self.figure)  # shown through the display handle only, not again at cell end
        for ax, panel in zip(self.figure.axes, panels, strict=True):
            ax.clear()
            for key in (k for k in panel if k in self.history):
                steps, values = zip(*self.history[key], strict=True)
                ax.plot(steps, values, marker="." if len(steps) < 40 and len(panel) == 1 else None,
                        label=key.split("/")[-1])
            if panel == REWARD_KEYS:
                ax.axhline(0.0, color="grey", lw=0.8)
                ax.legend(loc="best")
            ax.set(title="implicit rewards" if panel == REWARD_KEYS else panel[0], xlabel="step")
        self.figure.suptitle(self.title)
        self.figure.tight_layout()
        self._show()
        return self.figure

    def _show(self) -> None:
        """Show the figure (in a notebook: update it in place through the display handle); note the time."""
        if self.notebook:
            from IPython.display import display

            if self._handle is None:
                self._handle = display(self.figure, display_id=True)
            else:
                self._handle.update(self.figure)
        self._last_draw = time.monotonic()
