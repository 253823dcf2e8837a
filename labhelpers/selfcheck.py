"""The one line every lab ends with, and how the runner reads it back from an executed notebook.

A lab's last self-check cell, once its asserts have passed, calls
``self_check_passed("held-out loss", before, after, details=...)``, which prints

    Self-check passed: held-out loss 2.345 -> 1.234; format rate 0.00 -> 0.50, ...

The runner (the instructor's table) and the browser check find that line in the executed notebook
with :func:`find` and read the figure back with :func:`parse`: the report shows what the learner saw,
and a lab that never printed the line did not pass.

A lab that cannot go on on this machine or model for a reason it can name (llama.cpp's converter does not
know the model's architecture) calls ``stop_lab(reason)`` instead: the cell shows ``Lab stopped: reason``
without a traceback, the cells below do not run, and the runner reports the lab as ``stopped`` with that reason.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

PREFIX = "Self-check passed"
STOP_PREFIX = "Lab stopped"
_LINE = re.compile(
    r"^Self-check passed: (?P<figure>[^;]*?) (?P<before>\S+) -> (?P<after>[^\s;]+)"
    r"(?: (?P<unit>[^;]+))?(?:; (?P<details>.*))?$"
)


@dataclass(frozen=True)
class SelfCheck:
    """A lab's closing line, split into its headline figure and the rest."""

    line: str
    figure: str = ""
    before: str = ""
    after: str = ""
    unit: str = ""
    details: str = ""

    @property
    def headline(self) -> str:
        """``"held-out loss 2.345 -> 1.234"`` (with its unit), or ``""`` when the line has no figure."""
        if not self.figure:
            return ""
        return f"{self.figure} {self.before} -> {self.after}" + (f" {self.unit}" if self.unit else "")


def format_line(figure: str, before: float, after: float, *, fmt: str = ".3f", unit: str = "",
                details: str = "") -> str:
    """The closing line for ``figure`` going from ``before`` to ``after`` (see the module docstring)."""
    if not figure.strip() or ";" in figure or " -> " in figure:
        raise ValueError(f"self_check_passed: figure must be a short name without ';' or ' -> ', got {figure!r}.")
    if ";" in unit or " " in unit.strip():
        raise ValueError(f"self_check_passed: unit must be one word such as 'nats' or 'MB', got {unit!r}.")
    for name, value in (("before", before), ("after", after)):
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"self_check_passed: {name} must be a measured, finite number, got {value!r}.")
    line = f"{PREFIX}: {figure.strip()} {before:{fmt}} -> {after:{fmt}}" + (f" {unit.strip()}" if unit.strip() else "")
    return line + (f"; {details.strip()}" if details.strip() else "")


def self_check_passed(figure: str, before: float, after: float, *, fmt: str = ".3f", unit: str = "",
                      details: str = "") -> None:
    """Print the lab's closing line; call it after the self-check asserts, as the lab's last output."""
    print(format_line(figure, before, after, fmt=fmt, unit=unit, details=details), flush=True)


class LabStopped(Exception):
    """Raised by :func:`stop_lab`: the notebook ends here, for the reason in the message."""

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a traceback
        return [f"{STOP_PREFIX}: {self}"]


def stop_lab(reason: str) -> None:
    """End the lab here for ``reason`` (what cannot be done here and what to do): no traceback, no later cells."""
    if not reason.strip():
        raise ValueError("stop_lab: say why the lab stops and what to do instead.")
    raise LabStopped(reason.strip())


def parse(line: str) -> SelfCheck | None:
    """A :class:`SelfCheck` for a ``Self-check passed...`` line (figure empty if it has none); else None."""
    line = line.strip()
    if not line.startswith(PREFIX):
        return None
    match = _LINE.match(line)
    if match is None:
        return SelfCheck(line=line)
    return SelfCheck(line=line, **{k: (v or "").strip() for k, v in match.groupdict().items()})


def find(nb: Any) -> SelfCheck | None:
    """The last ``Self-check passed`` line a notebook (nbformat, executed) printed to stdout, parsed."""
    found = None
    for cell in nb.cells if hasattr(nb, "cells") else nb["cells"]:
        if cell.get("cell_type") != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                text = out.get("text", "")
                for line in ("".join(text) if isinstance(text, list) else text).splitlines():
                    found = parse(line) or found
    return found
