"""Labs 00, 03 and 12 opened in JupyterLab in headless Chromium and run from the Run menu, as a learner does.

nbval proves the cells run in a kernel; this proves what JupyterLab shows: no error output, no
unexplained stderr, the progress bar as a widget, the live plot as an image, the self-check line.
When this check can run, nbval leaves labs 00, 03 and 12 to it (the root conftest.py), so they run once.
"""

from __future__ import annotations

import os

import pytest
from jupyterlab_check import LABS, run_check, why_unavailable

from labhelpers.profiles import profile


@pytest.mark.browser
def test_labs_run_from_the_run_menu_show_widgets_plots_and_their_self_check_line():
    missing = why_unavailable()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the browser check cannot run: {missing}")
        pytest.skip(missing)
    shots = profile(verbose=False).output_dir / "screenshots"
    summary = run_check(list(LABS), shots)
    problems = [f"{lab['lab']}: {problem}" for lab in summary["labs"] for problem in lab["problems"]]
    assert not problems, "in JupyterLab a learner would see:\n" + "\n".join(problems)
    assert [lab["lab"] for lab in summary["labs"]] == [name for name, _ in LABS.values()]
    for lab in summary["labs"]:
        assert lab["self_check"].startswith("Self-check passed: "), f"{lab['lab']}: {lab['self_check']!r}"
    for name in ("00_environment_check-top", "03_lora_sft-top", "03_lora_sft-training", "12_grpo-training"):
        assert (shots / f"{name}.png").stat().st_size > 10_000, f"{name}.png is missing or blank"
