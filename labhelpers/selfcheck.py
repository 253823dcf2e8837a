"""The one line every lab ends with, and how the runner reads it back from an executed notebook.

A lab's last self-check cell, once its asserts have passed, calls
``print_self_check("held-out loss", before, after, details=...)``, which prints

    Self-check passed: held-out loss 2.345 -> 1.234; format rate 0.00 -> 0.50, ...

The runner (the instructor's table) and the browser check find that line in the executed notebook
with ``harness.report.find_self_check`` and read the figure back with ``parse_self_check``: the report
shows what the learner saw, and a lab that never printed the line did not pass.

A lab that cannot go on on this machine or model for a reason it can name (llama.cpp's converter does not
know the model's architecture) calls ``stop_lab(reason)`` instead: the cell shows ``Lab stopped: reason``
without a traceback, the cells below do not run, and the runner reports the lab as ``stopped`` with that reason.
"""

from __future__ import annotations

import math

PREFIX = "Self-check passed"
STOP_PREFIX = "Lab stopped"
def format_line(figure: str, before: float, after: float, *, fmt: str = ".3f", unit: str = "",
                details: str = "") -> str:
    """The closing line for ``figure`` going from ``before`` to ``after`` (see the module docstring)."""
    if not figure.strip() or ";" in figure or " -> " in figure:
        raise ValueError(f"print_self_check: figure must be a short name without ';' or ' -> ', got {figure!r}.")
    if ";" in unit or " " in unit.strip():
        raise ValueError(f"print_self_check: unit must be one word such as 'nats' or 'MB', got {unit!r}.")
    for name, value in (("before", before), ("after", after)):
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"print_self_check: {name} must be a measured, finite number, got {value!r}.")
    line = f"{PREFIX}: {figure.strip()} {before:{fmt}} -> {after:{fmt}}" + (f" {unit.strip()}" if unit.strip() else "")
    return line + (f"; {details.strip()}" if details.strip() else "")


def print_self_check(figure: str, before: float, after: float, *, fmt: str = ".3f", unit: str = "",
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

