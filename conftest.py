"""Root test configuration: hooks that must reach every collected item, notebooks in labs/ included.

(A hook in tests/conftest.py applies only to items under tests/; nbval collects labs/*.ipynb.)
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

# Never reach a model hub from the test suite (the notebooks run by nbval inherit this too).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("LABS_PROFILE", "smoke")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("LABS_MODEL", None)

import pytest  # noqa: E402

BROWSER_CHECK = Path(__file__).resolve().parent / "tests" / "browser" / "jupyterlab_check.py"
_MOVED = pytest.StashKey[list]()  # the notebooks nbval left to the browser check in this session


def _browser_check():
    """tests/browser/jupyterlab_check.py as a module (the browser test imports it by the same name)."""
    if "jupyterlab_check" not in sys.modules:
        spec = importlib.util.spec_from_file_location("jupyterlab_check", BROWSER_CHECK)
        module = importlib.util.module_from_spec(spec)
        sys.modules["jupyterlab_check"] = module
        spec.loader.exec_module(module)
    return sys.modules["jupyterlab_check"]


@pytest.hookimpl(trylast=True)  # after -m / -k deselection: only a browser check that will run counts
def pytest_collection_modifyitems(config, items):
    """Labs the browser check runs through JupyterLab are not run again by nbval in the same session.

    The browser check asserts what nbval does for them (no error output) and more: no stderr line that
    labhelpers.messages does not explain, the self-check line, widgets, plots. Only when it is collected
    and can run here; otherwise (no Chromium, `-m 'not browser'`, `pytest labs/03_lora_sft.ipynb`) nbval
    runs them.
    """
    if not any(Path(str(item.path)) == BROWSER_CHECK.with_name("test_jupyterlab.py") for item in items):
        return
    check = _browser_check()
    if check.why_unavailable():
        return
    names = {f"{name}.ipynb" for name, _ in check.LABS.values()}
    moved = [item for item in items if type(item).__name__ == "IPyNbCell" and Path(str(item.path)).name in names]
    if moved:
        items[:] = [item for item in items if item not in moved]
        config.hook.pytest_deselected(items=moved)
        config.stash[_MOVED] = sorted(names)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    moved = config.stash.get(_MOVED, None)
    if moved:
        terminalreporter.write_line(
            f"nbval: {', '.join(moved)} left to the browser check (tests/browser), not run twice")


# Under CI=true a skip hides a missing extra, model or tool: it fails instead. Only a test marked for what a CI
# machine cannot choose to have may still skip: @pytest.mark.gpu (it depends on whether a CUDA GPU is there) or
# @pytest.mark.ollama (it needs an Ollama server). The marker decides, never the words of the skip's reason.
CI_SKIP_MARKERS = ("gpu", "ollama")


def ci_skip_failure(reason: str, markers: set[str] | frozenset[str] = frozenset()) -> str | None:
    """The failure message for a skip under CI=true of a test with these markers, or None if it may skip."""
    if os.environ.get("CI") != "true" or markers & set(CI_SKIP_MARKERS):
        return None
    return (f"CI=true: skipping is a failure here (only tests marked {' or '.join(CI_SKIP_MARKERS)} may skip): "
            f"{reason}")


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def _fail_ci_skip(report, markers: frozenset[str] = frozenset()):
    """Turn a skipped report (a test, or a module-level skip at collection) into a failure where CI forbids it."""
    if report.skipped and not hasattr(report, "wasxfail"):
        failure = ci_skip_failure(_skip_reason(report), markers)
        if failure:
            report.outcome, report.longrepr = "failed", failure
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    return _fail_ci_skip((yield), frozenset(m.name for m in item.iter_markers()))


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    # a module-level skip (pytest.skip(..., allow_module_level=True), importorskip)
    return _fail_ci_skip((yield))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A notebook cell (nbval) fails on any stderr line a learner would see unexplained (labhelpers/messages.py)."""
    result = yield
    outputs = getattr(item, "test_outputs", None)
    if outputs is not None and type(item).__name__ == "IPyNbCell":
        from labhelpers.harness.audit import unexplained_stderr

        noise = unexplained_stderr(outputs)
        if noise:
            raise AssertionError(
                f"{item.name}: {len(noise)} stderr line(s) a learner would read unexplained; fix each at its "
                "source, or filter the exact message in labhelpers/messages.py with why:\n" + "\n".join(noise[:20])
            )
    return result
