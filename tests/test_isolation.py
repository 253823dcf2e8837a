"""Unit tests are isolated from each other and from the shell: their own output folder, no inherited seed."""

from __future__ import annotations

import os

from labhelpers.profiles import outputs_root, profile

_SEEN: list[str] = []


def test_a_test_writes_to_its_own_output_folder():
    root = outputs_root()
    assert root.is_dir() and "outputs" in root.name and str(root) == os.environ["LABS_OUTPUT_DIR"]
    _SEEN.append(str(root))


def test_the_next_test_gets_another_folder():
    assert _SEEN and str(outputs_root()) not in _SEEN


def test_no_seed_is_inherited_from_the_shell():
    assert "LABS_SEED" not in os.environ and profile(verbose=False).seed == 0
