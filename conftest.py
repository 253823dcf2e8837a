"""Root test configuration: hooks that must reach every collected item, notebooks in labs/ included.

(A hook in tests/conftest.py applies only to items under tests/; nbval collects labs/*.ipynb.)
"""

from __future__ import annotations

import os

# Never reach a model hub from the test suite (the notebooks run by nbval inherit this too).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("LABS_PROFILE", "smoke")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("LABS_MODEL", None)

import pytest  # noqa: E402


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A notebook cell (nbval) fails on any stderr line a learner would see unexplained (labhelpers/quiet.py)."""
    result = yield
    outputs = getattr(item, "test_outputs", None)
    if outputs is not None and type(item).__name__ == "IPyNbCell":
        from labhelpers.quiet import unexplained_stderr

        noise = unexplained_stderr(outputs)
        if noise:
            raise AssertionError(
                f"{item.name}: {len(noise)} stderr line(s) a learner would read unexplained; fix each at its "
                "source, or filter the exact message in labhelpers/quiet.py with why:\n" + "\n".join(noise[:20])
            )
    return result
