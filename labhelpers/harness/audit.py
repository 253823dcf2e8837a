"""The stderr audit of executed notebooks: every line a lab printed on stderr must be explained.

The library messages that cannot be fixed at their source are filtered at import (:mod:`labhelpers.messages`);
what is left on a cell's stderr is either one of :data:`ALLOWED_STDERR` (each with why) or a defect that the
runner and the notebook tests report.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

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
