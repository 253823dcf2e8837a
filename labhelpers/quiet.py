"""What a learner must not have to read: the few library messages that cannot be fixed at their source.

Each entry is one exact message, with why it cannot be avoided. Everything else a lab prints on
stderr is a defect to fix where it comes from; :func:`unexplained_stderr` finds it (the runner and
the notebook tests fail on it). ``import labhelpers`` installs the filters, so they apply before the
libraries that emit them are imported.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

# (logger name, exact start of the message, why it cannot be avoided)
LOG_FILTERS: tuple[tuple[str, str, str], ...] = (
    (
        "bitsandbytes.backends.cpu.ops",
        "Failed to load CPU gemm_4bit_forward from kernels-community",
        # bitsandbytes 0.50, on CPUs with AVX512-BF16 only: it tries to download an optional kernel
        # from the Hugging Face hub (package `kernels`). The labs never load code from a hub, and the
        # built-in CPU 4-bit path it falls back to works (lab 00 checks that 4-bit really quantizes).
        "optional hub kernel, built-in fallback used",
    ),
)

# (exact message regex, category, module that warns, why it cannot be avoided)
WARNING_FILTERS: tuple[tuple[str, type[Warning], str, str], ...] = (
    (
        r"`is_gradient_checkpointing` is deprecated and will be removed in v6\. Use `is_activation_checkpointing` instead\.",
        FutureWarning,
        r"transformers\.modeling_utils",
        # transformers 5.23 renamed the property; peft 0.21.2 (PeftModel.__init__) and TRL 1.16
        # (trl/models/utils.py) still read the old name whenever an adapter is attached. Not our code.
        "peft 0.21.2 and TRL 1.16 read a renamed transformers property",
    ),
)

# stderr lines that are not warnings: progress bars that fall back to text (none expected in
# JupyterLab, where tqdm.auto draws widgets) are the only allowed ones.
ALLOWED_STDERR: tuple[tuple[str, str], ...] = (
    (r"^\s*$", "blank line"),
    (
        r"^\[transformers\] return_assistant_tokens_mask==True but chat template does not contain "
        r"`\{% generation %\}` keyword\.$",
        # Lab 02 asks a template without generation markers for the assistant mask on purpose: the
        # empty mask, and this warning, are what the cell shows (the lab's text explains the red line).
        "lab 02's lesson: a template without {% generation %} gives an empty mask",
    ),
    (
        r"TRLExperimentalWarning: You are importing from 'trl\.experimental'\. APIs here are unstable and may "
        r"change or be removed without notice\. Silence this warning by setting environment variable "
        r"TRL_EXPERIMENTAL_SILENCE=1\.$|^\s+from trl\.experimental\.(cpo|orpo) import ",
        # TRL 1.16 keeps CPOTrainer (SimPO) and ORPOTrainer in trl.experimental and says so on import (with
        # the importing line). Labs 07 and 08 explain the red line: those APIs may change, so TRL is pinned.
        "labs 07 and 08 explain TRL's experimental-import notice",
    ),
)


class _DropExact(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def install() -> None:
    """Attach the exact-message filters of :data:`LOG_FILTERS` and :data:`WARNING_FILTERS` (idempotent)."""
    import warnings

    for message, category, module, _why in WARNING_FILTERS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name, prefix, _why in LOG_FILTERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropExact) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(_DropExact(prefix))


def unexplained_stderr(outputs: Iterable[dict[str, Any]]) -> list[str]:
    """The stderr lines among a cell's outputs (nbformat dicts) that no entry of :data:`ALLOWED_STDERR` explains."""
    lines = []
    for out in outputs:
        if out.get("output_type") == "stream" and out.get("name") == "stderr":
            text = out.get("text", "")
            text = "".join(text) if isinstance(text, list) else text
            for line in text.replace("\r", "\n").splitlines():
                if not any(re.search(pattern, line) for pattern, _ in ALLOWED_STDERR):
                    lines.append(line)
    return lines


def notebook_stderr(nb: Any) -> list[tuple[int, str]]:
    """``(cell index, line)`` for every unexplained stderr line of an executed notebook."""
    return [(i, line) for i, cell in enumerate(nb.cells) if cell.get("cell_type") == "code"
            for line in unexplained_stderr(cell.get("outputs", []))]
