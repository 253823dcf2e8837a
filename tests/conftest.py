"""Test configuration: offline, smoke profile, quiet about known harmless noise."""

from __future__ import annotations

import logging
import os

# Never reach a model hub from the test suite (the notebooks run by nbval inherit this too).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("LABS_PROFILE", "smoke")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PYTHONWARNINGS", "ignore")  # nbval kernels: keep library warnings out of the logs
os.environ.pop("LABS_MODEL", None)

# bitsandbytes logs at import that an optional CPU kernel package is absent; the fallback works.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def embedded_dir():
    """The materialised embedded model folder (created once per machine)."""
    from labhelpers.embedded import embedded_model_dir

    return embedded_model_dir()


@pytest.fixture(scope="session")
def tiny_model(embedded_dir):
    """The embedded model in float32, loaded once for the whole session. Do not train it in place."""
    from labhelpers.models import load_model

    return load_model(str(embedded_dir))


@pytest.fixture(scope="session")
def tokenizer(embedded_dir):
    from labhelpers.models import load_tokenizer

    return load_tokenizer(str(embedded_dir))
