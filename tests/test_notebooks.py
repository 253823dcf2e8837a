"""Notebook hygiene: committed without outputs, valid, shaped as lessons, safe. (nbval executes them.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

LABS = Path(__file__).resolve().parent.parent / "labs"
NOTEBOOKS = sorted(LABS.glob("*.ipynb"))
HAND_WRITTEN_CHAT = ("<|im_start|>", "<|start_header_id|>", "<|eot_id|>", "[INST]", "<|user|>", "<|assistant|>")


def _cells(path: Path):
    return nbformat.read(path, as_version=4).cells


def _code(path: Path) -> str:
    return "\n".join(c.source for c in _cells(path) if c.cell_type == "code")


def test_there_are_labs():
    assert NOTEBOOKS and all(re.match(r"\d\d_[a-z0-9_]+\.ipynb$", p.name) for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_labs_call_labhelpers_as_lh_with_one_spelling_per_verb(path):
    """``import labhelpers as lh`` and nothing else from labhelpers; every ``lh.<name>`` is an export, and a
    namespace's names (``lh.deploy.<name>``) are that namespace's."""
    import importlib

    import labhelpers as lh

    code = _code(path)
    lines = [line.strip() for line in code.splitlines() if re.match(r"\s*(from|import)\s+labhelpers\b", line)]
    assert lines and set(lines) == {"import labhelpers as lh"}, f"{path.name}: {lines}"
    for name, inner in re.findall(r"(?<![\w.])lh\.(\w+)(?:\.(\w+))?", code):
        assert name in lh.__all__, f"{path.name}: lh.{name} is not in labhelpers.__all__"
        if name in lh.NAMESPACES and inner:
            namespace = importlib.import_module(f"labhelpers.{name}")
            assert inner in getattr(namespace, "__all__", dir(namespace)), f"{path.name}: lh.{name}.{inner}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_valid_and_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: clear outputs before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_lesson_shape(path):
    cells = _cells(path)
    number = int(path.name[:2])
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith(f"# Lab 3.1.{number}:"), path.name
    code = _code(path)
    assert re.search(r"\b(lh|labhelpers)\.profile\(", code), f"{path.name}: no profile() setup cell"
    assert _self_check_cells(cells), f"{path.name}: no Self-check section with code"
    assert any("try next" in c.source.lower() for c in cells if c.cell_type == "markdown"), path.name


# ------------------------------------------------------------------------- the Self-check asserts what ran
SELF_CHECK_HEADING = re.compile(r"^#+ .*self-check", re.I | re.M)
# calls whose result is configuration or a prediction, not a measurement of this run: the profile and its paths,
# configs and presets, schedules, plans and estimates computed from them, commands built from settings, the data's
# own labels
CONFIG_CALLS = {"profile", "lab_dir", "resolve", "getenv", "with_overrides", "schedule", "with_steps", "estimate_time",
                "plan_memory", "arch_spec", "param_counts", "flops_per_token", "device_throughput", "sparks_needed",
                "plan_disk", "launch_command", "two_spark_commands", "decoder_layer_class", "expected_labs",
                "reference_answer", "prompt_messages", "data_path", "version"}  # fmt: skip
# calls that pass their arguments' nature through (a length, a sum, a conversion, a container)
TRANSPARENT_CALLS = {"abs", "all", "any", "bool", "dict", "enumerate", "float", "frozenset", "getattr", "int",
                     "isinstance", "len", "list", "max", "min", "Path", "range", "repr", "round", "set", "sorted",
                     "str", "sum", "tuple", "zip"}  # fmt: skip
# attributes that read configuration out of a measured object (a trainer's args, a model's config)
CONFIG_ATTRS = {"args", "config", "peft_config", "generation_config", "environ"}
# methods that read what the run wrote to disk (a saved adapter, an exported file)
FILE_READS = {"exists", "glob", "is_dir", "is_file", "iterdir", "read_bytes", "read_text", "rglob", "stat"}
MUTATORS = {"add", "append", "extend", "insert", "setdefault", "update"}  # container.append(measured) holds one


def _self_check_cells(cells) -> list[int]:
    """Indices of the code cells of the Self-check section: after its heading, up to the next heading."""
    start = next((i for i, c in enumerate(cells) if c.cell_type == "markdown" and SELF_CHECK_HEADING.search(c.source)),
                 None)  # fmt: skip
    if start is None:
        return []
    found = []
    for i in range(start + 1, len(cells)):
        if cells[i].cell_type == "markdown" and re.search(r"^#", cells[i].source, re.M):
            break
        if cells[i].cell_type == "code":
            found.append(i)
    return found


def _callee(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _root(node: ast.expr) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


class Measured:
    """Which names of a notebook hold a measured quantity of the run, followed cell by cell (see the test)."""

    def __init__(self) -> None:
        self.measured: set[str] = set()
        self.bound: set[str] = set()  # every name assigned so far (a non-measured one is configuration)

    def expr(self, node: ast.AST | None) -> bool:
        """Does this expression's value depend on something the run measured?"""
        if node is None or isinstance(node, ast.Constant):
            return False
        if isinstance(node, ast.Name):
            return node.id in self.measured
        if isinstance(node, ast.Attribute):
            return node.attr not in CONFIG_ATTRS and self.expr(node.value)
        if isinstance(node, ast.Call):
            name = _callee(node.func)
            if name in CONFIG_CALLS or name.endswith(("_config", "Config")):
                return False
            args = [*node.args, *(k.value for k in node.keywords)]
            if name in TRANSPARENT_CALLS:
                return any(self.expr(a) for a in args)
            if isinstance(node.func, ast.Attribute) and name not in FILE_READS:  # a method: of a measured object,
                root = _root(node.func)
                if root in self.bound and root not in self.measured and not self.expr(node.func.value):
                    return any(self.expr(a) for a in args)  # a method of configuration (lab.x(), a dict of settings)
            return True  # training, evaluation, loading, measuring: something computed by this run
        return any(self.expr(child) for child in ast.iter_child_nodes(node))

    def bind(self, target: ast.expr, measured: bool) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self.bind(element, measured)
        elif isinstance(target, ast.Starred):
            self.bind(target.value, measured)
        elif isinstance(target, ast.Name):
            self.bound.add(target.id)
            (self.measured.add if measured else self.measured.discard)(target.id)
        elif measured and _root(target):  # results[key] = ..., obj.attr = ...: the container now holds one
            self.measured.add(_root(target))

    def run(self, body: list[ast.stmt]) -> None:
        """Follow the assignments of these statements in order (not inside def/class bodies)."""
        for stmt in body:
            if isinstance(stmt, ast.Assign):
                value = self.expr(stmt.value)
                for target in stmt.targets:
                    self.bind(target, value)
            elif isinstance(stmt, (ast.AugAssign, ast.AnnAssign)) and stmt.value is not None:
                self.bind(stmt.target, self.expr(stmt.value) or self.expr(stmt.target))
            elif isinstance(stmt, (ast.For, ast.AsyncFor)):
                self.bind(stmt.target, self.expr(stmt.iter))
            elif isinstance(stmt, (ast.With, ast.AsyncWith)):
                for item in stmt.items:
                    if item.optional_vars is not None:
                        self.bind(item.optional_vars, self.expr(item.context_expr))
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.bound.add(stmt.name)
                for node in ast.walk(stmt):  # a hook or callback writing into a notebook-level container
                    written = [*node.targets] if isinstance(node, ast.Assign) else (
                        [node.target] if isinstance(node, ast.AugAssign) else [])
                    if isinstance(node, ast.Call) and _callee(node.func) in MUTATORS:
                        written.append(node.func)
                    for target in written:
                        if isinstance(target, (ast.Subscript, ast.Attribute)) and _root(target) in self.bound:
                            self.measured.add(_root(target))
                continue
            elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
                call = stmt.value
                if _callee(call.func) in MUTATORS and isinstance(call.func, ast.Attribute) and any(
                        self.expr(a) for a in [*call.args, *(k.value for k in call.keywords)]):
                    self.measured.add(_root(call.func.value))
            elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
                continue
            for field in ("body", "orelse", "finalbody"):  # if / for / while / with / try blocks, in order
                self.run(getattr(stmt, field, None) or [])
            for handler in getattr(stmt, "handlers", None) or []:
                if handler.name:  # except ... as err: the error this run raised
                    self.bound.add(handler.name)
                    self.measured.add(handler.name)
                self.run(handler.body)


def _parse(source: str) -> ast.Module:
    return ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_self_check_asserts_what_this_run_measured(path):
    """Every ``assert`` in the Self-check section tests a measured quantity of this run, not a constant or config.

    The rule, checked on the code with ``ast`` (the Self-check section = the code cells after the markdown
    heading that names it, up to the next heading):

    - a name is *measured* when an assignment binds it to the result of a call that computes something in
      this run (training, evaluating, loading data, measuring memory, exporting, ...) or to an expression
      of measured names (arithmetic, indexing, attributes, comprehensions); ``for`` targets over measured
      values, ``with ... as`` targets of a call, and ``except ... as err`` (an error the run raised) too;
    - not measured: constants, and configuration: ``lh.profile()`` and what is read from it (``lab.x``,
      ``lab.lab_dir()``, ``lab.resolve()``), any ``*_config(...)`` / ``*Config(...)`` call, a measured
      object's ``.args`` / ``.config`` / ``.peft_config`` / ``.generation_config``, ``os.environ``;
      ``len``, ``min``, ``sum``, ``int``, ``Path``, ... are measured only when their arguments are;
    - every ``assert`` in the section must test a measured expression, and at least one of them must use a
      name measured *before* the section (the run's own result, not one computed only to be checked);
    - every ``assert`` stands at the top level of its cell or in a ``for`` loop over measured rows: never under
      ``if``, ``try``, ``while`` or ``with`` (a bound that depends on the profile or the device is chosen, and
      named, before one unconditional assert);
    - no ``assert`` checks nothing a broken run could fail: not a tuple, not ``a or b``, not an expression
      compared with itself, not ``is None`` / ``is not None``, not non-negativity (``x >= 0``) or finiteness alone;
    - at least one ``assert`` compares a measured value with a *named* bound (``assert drop >= MIN_DROP``).

    A config echo (``assert args.beta == 0.1``, ``assert batch_size > 1``) therefore fails here: print it instead.
    The rule cannot tell a measured quantity that is guaranteed by construction from one that is not: that
    the bound can fail on a broken run is for the cell's comment to say and the author to try.
    """
    problems = self_check_problems(_cells(path))
    assert not problems, f"{path.name}: " + "\n".join(problems)


def _vacuous(test: ast.expr) -> str | None:
    """Why an assert's test checks nothing a broken run could fail, or None (see the rule's docstring)."""
    if isinstance(test, ast.Tuple):
        return "a tuple is always true (assert (cond, 'msg') asserts nothing)"
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.Or):
        return "'or' lets one side pass it: choose the bound before the assert, then assert once"
    if isinstance(test, ast.BoolOp):  # and: every part must check something
        reasons = [_vacuous(v) for v in test.values]
        return reasons[0] if all(reasons) else None
    if isinstance(test, ast.Call) and _callee(test.func) in ("isfinite", "isnan", "isinf"):
        return "finiteness alone"
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not) and isinstance(test.operand, ast.Call) and (
            _callee(test.operand.func) in ("isnan", "isinf")):
        return "finiteness alone"
    if isinstance(test, ast.Compare):
        sides = [test.left, *test.comparators]
        if any(ast.dump(a) == ast.dump(b) for a, b in zip(sides, sides[1:], strict=False)):
            return "an expression compared with itself"
        if any(isinstance(op, (ast.Is, ast.IsNot)) for op in test.ops) and any(
                isinstance(c, ast.Constant) and c.value is None for c in sides):
            return "'is (not) None' checks that something exists, not what it measured"
        if len(test.ops) == 1 and isinstance(test.ops[0], (ast.GtE, ast.Gt)) \
                and isinstance(test.comparators[0], ast.Constant) \
                and test.comparators[0].value in (0, 0.0) and isinstance(test.ops[0], ast.GtE):
            return "non-negativity alone"
    return None


def _named_bound(test: ast.expr, tracker: Measured) -> bool:
    """Does this assert compare a measured expression with a named bound (a non-measured name, e.g. MIN_DROP)?"""
    for node in ast.walk(test):
        if isinstance(node, ast.Compare) and not any(isinstance(op, (ast.Is, ast.IsNot, ast.In, ast.NotIn))
                                                     for op in node.ops):  # fmt: skip
            sides = [node.left, *node.comparators]
            measured = [tracker.expr(x) for x in sides]
            named = [any(isinstance(n, ast.Name) and n.id in tracker.bound and n.id not in tracker.measured
                         for n in ast.walk(x)) for x in sides]  # fmt: skip
            if any(measured) and any(n and not m for n, m in zip(named, measured, strict=True)):
                return True
    return False


def self_check_problems(cells) -> list[str]:
    """What breaks the rule of test_self_check_asserts_what_this_run_measured in these cells (empty: none)."""
    section = _self_check_cells(cells)
    if not section:
        return ["no Self-check section with code"]
    tracker = Measured()
    for cell in cells[: section[0]]:
        if cell.cell_type == "code":
            tracker.run(_parse(cell.source).body)
    earlier = set(tracker.measured)  # measured before the section, and names the section derives from them
    asserts, problems, structure, uses_earlier, bounded = 0, [], [], False, False
    for index in section:
        for stmt in _parse(cells[index].source).body:  # in order: a name assigned above an assert counts
            tracker.run([stmt])  # first, so that a for-loop's target is bound for the asserts in its body
            for node in ast.walk(stmt):
                value = getattr(node, "value", None) if isinstance(node, (ast.Assign, ast.AugAssign)) else (
                    node.iter if isinstance(node, ast.For) else None)
                if value is not None and {n.id for n in ast.walk(value) if isinstance(n, ast.Name)} & earlier:
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    earlier |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            if not isinstance(stmt, (ast.Assert, ast.For)):  # an assert under if / try / while / with is conditional
                for node in ast.walk(stmt):
                    if isinstance(node, ast.Assert):
                        structure.append(f"cell {index}, line {node.lineno}: assert inside a "
                                         f"{type(stmt).__name__.lower()} block: {ast.unparse(node.test)[:80]}")
            for node in ast.walk(stmt):
                if isinstance(node, ast.Assert):
                    asserts += 1
                    why = _vacuous(node.test)
                    if why:
                        structure.append(f"cell {index}, line {node.lineno}: {why}: "
                                         f"assert {ast.unparse(node.test)[:80]}")
                    if tracker.expr(node.test):
                        names = {n.id for n in ast.walk(node.test) if isinstance(n, ast.Name)}
                        uses_earlier |= bool(names & earlier)
                        bounded |= _named_bound(node.test, tracker)
                    else:
                        problems.append(f"cell {index}, line {node.lineno}: assert {ast.unparse(node.test)[:100]}")
    if not asserts:
        return ["the Self-check section asserts nothing"]
    found = []
    if problems:
        found += ["Self-check asserts on constants or configuration, not on what this run measured (print those "
                  "instead):", *problems]
    if structure:
        found += ["Self-check asserts that cannot fail on a broken run, or only sometimes run:", *structure]
    if not uses_earlier:
        found.append("no Self-check assert uses a quantity measured before the Self-check")
    if not bounded:
        found.append("no Self-check assert compares a measured value with a named bound (e.g. MIN_DROP = 0.2, then "
                     "assert drop >= MIN_DROP): name the bound, and say in a comment how it was chosen")
    return found


def test_the_self_check_rule_tells_a_measurement_from_a_config_echo():
    from nbformat.v4 import new_code_cell, new_markdown_cell

    setup = new_code_cell("import labhelpers as lh\nlab = lh.profile()\nRANK = lab.lora_rank\n"
                          "args = training.sft_config(lab, 'out')\ntrainer = SFTTrainer(args=args)\n"
                          "plan = lh.schedule(lab, 'sft')\nestimate = lh.estimate_time(plan, 'model')\n"
                          "summary = training.train(trainer)\nloss = heldout_loss(trainer.model)\nMAX_LOSS = 3.0")
    head = new_markdown_cell("## Self-check")

    def problems(check: str) -> list[str]:
        return self_check_problems([setup, head, new_code_cell(check)])

    bounded = "assert loss < MAX_LOSS\n"  # a named bound, so the other lines decide
    for echo in ("assert RANK == 16", "assert lab.seed == 0", "assert trainer.args.beta == 0.1",
                 "assert args.max_steps > 1", "refused = True\nassert refused", "assert len(RANK * [1]) == 16",
                 "assert plan.steps > 1", "assert estimate.low_s < estimate.high_s"):  # fmt: skip
        assert problems(bounded + echo), f"not flagged: {echo}"
    for vacuous in ("if not lab.is_smoke:\n    assert loss < 2.0",  # only sometimes run
                    "if loss < 2:\n    assert loss < 2\nelse:\n    assert loss > 1",
                    "try:\n    assert loss < 2.0\nexcept AssertionError:\n    pass",
                    "while False:\n    assert loss < 2.0",
                    "assert loss < 2.0 or lab.is_smoke", "assert lab.is_smoke or loss < 2.0",  # one side passes it
                    "assert loss == loss", "assert summary.final_loss <= summary.final_loss",  # itself
                    "assert summary.final_loss is not None", "assert loss is not None and loss is not None",
                    "assert abs(loss) >= 0", "assert loss >= 0", "assert math.isfinite(loss)",
                    "assert not math.isnan(loss)", "assert math.isfinite(loss) and loss >= 0",
                    "assert (loss < 2.0, 'the loss fell')"):  # a tuple: always true  # fmt: skip
        assert problems(bounded + vacuous), f"not flagged: {vacuous}"
    for measured in ("assert loss < MAX_LOSS", "assert summary.final_loss < MAX_LOSS",
                     "MIN_DROP = 0.1\ndrop = 1 - loss / 3\nassert drop >= MIN_DROP",
                     "for x in (loss,):\n    assert x < MAX_LOSS",
                     "assert math.isfinite(loss) and loss < MAX_LOSS",
                     "LIMIT = 2.0 if lab.is_smoke else 1.0  # chosen per profile, then one assert\n"
                     "assert loss < LIMIT"):
        assert problems(measured) == [], f"flagged: {measured}"
    assert problems("assert loss < 2.0") == [  # measured, but no named bound
        "no Self-check assert compares a measured value with a named bound (e.g. MIN_DROP = 0.2, then assert drop "
        ">= MIN_DROP): name the bound, and say in a comment how it was chosen"]
    assert problems("drop = heldout_loss(None)\nassert drop < MAX_LOSS") == [
        "no Self-check assert uses a quantity measured before the Self-check"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_safe_code(path):
    code = _code(path)
    assert not re.search(r"(^|\s|!|%)sudo\s", code), f"{path.name}: sudo in a notebook"
    assert not re.search(r"(!|%)\s*pip\s+install|pip install", code), f"{path.name}: pip install in a notebook"
    assert "trust_remote_code=True" not in code
    for token in HAND_WRITTEN_CHAT:
        assert token not in code, f"{path.name}: hand-written chat token {token!r}; use apply_chat_template"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_relative_links_resolve(path):
    for cell in _cells(path):
        if cell.cell_type != "markdown":
            continue
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", cell.source):
            if "://" in target:
                continue
            assert (path.parent / target).exists(), f"{path.name}: broken link {target}"


TRAINING_LABS = [p for p in NOTEBOOKS if p.name[:2] in ("03", "04", "05", "06", "07", "08", "09", "12")]
# a duration typed into prose ("10-15 minutes", "half an hour", "about 2 hours"); computed ones live in code
QUOTED_DURATION = re.compile(r"\b(\d+(\.\d+)?(\s*-\s*\d+)?\s+(seconds?|minutes?|hours?)"
                             r"|(an?|half an?|one|two|several|a few)"
                             r"\s+(seconds|minutes?|hours?))\b", re.I)  # not "a second model"


@pytest.mark.parametrize("path", TRAINING_LABS, ids=lambda p: p.stem)
def test_training_labs_print_a_computed_estimate_before_training_and_the_measured_time_after(path):
    code = _code(path)
    estimate = max(code.find("estimate_time("), code.find("estimate_grpo_time("))  # GRPO: generation + updates
    assert estimate >= 0, f"{path.name}: no lh.estimate_time(...) before training"
    first_train = min(i for i in (code.find("train(trainer"), code.find("training.train(")) if i >= 0)
    assert estimate < first_train, f"{path.name}: the estimate comes after training starts"
    assert "estimate.versus(" in code[first_train:], f"{path.name}: the measured time is not set next to the estimate"
    assert "lh.schedule(" in code, f"{path.name}: the steps are not computed by lh.schedule"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_duration_is_quoted_in_markdown(path):
    prose = "\n".join(c.source for c in _cells(path) if c.cell_type == "markdown")
    found = [m.group(0) for m in QUOTED_DURATION.finditer(prose)]
    assert not found, f"{path.name}: durations quoted in markdown (compute them in code instead): {found}"


# ------------------------------------------------------------------ the headline is a figure the Self-check asserts
def _chains(node: ast.AST) -> set[str]:
    """The references an expression reads: maximal Name / attribute / subscript chains (``INFOS["f16"].size_bytes``),
    with the chains inside subscripts and call arguments; constants and the callee's own name are left out."""
    found: set[str] = set()

    def visit(n: ast.AST, top: bool) -> None:
        if isinstance(n, (ast.Name, ast.Attribute, ast.Subscript)):
            if top:
                found.add(ast.unparse(n))
            inner = n.value if isinstance(n, (ast.Attribute, ast.Subscript)) else None
            if inner is not None:
                visit(inner, False)
            if isinstance(n, ast.Subscript):
                visit(n.slice, True)
            return
        if isinstance(n, ast.Call):
            for arg in [*n.args, *(k.value for k in n.keywords)]:
                visit(arg, True)
            if isinstance(n.func, ast.Attribute):  # a method of something the run measured: result.accuracy("x")
                found.add(ast.unparse(n))
                visit(n.func.value, True)
            return
        for child in ast.iter_child_nodes(n):
            visit(child, True)

    visit(node, True)
    return found


def headline_problems(cells) -> list[str]:
    """Why the before/after figures of a lab's ``print_self_check`` call are not what its Self-check asserts."""
    section = _self_check_cells(cells)
    assigned: dict[str, ast.expr] = {}  # each name's last assignment, over the whole notebook
    asserted: set[str] = set()
    call = None
    for index, cell in enumerate(cells):
        if cell.cell_type != "code":
            continue
        for node in ast.walk(_parse(cell.source)):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    elts = target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]
                    values = node.value.elts if isinstance(node.value, (ast.Tuple, ast.List)) and len(
                        node.value.elts) == len(elts) else [node.value] * len(elts)
                    for element, value in zip(elts, values, strict=True):
                        if isinstance(element, ast.Name):
                            assigned[element.id] = value
            if index in section and isinstance(node, ast.Assert):
                asserted |= _chains(node.test)
            if index in section and isinstance(node, ast.Call) and _callee(node.func) == "print_self_check":
                call = node
    if call is None or len(call.args) < 3:
        return ["no print_self_check(figure, before, after) call in the Self-check section"]
    covered = set(asserted)
    for _ in range(2):  # an assert on held_drop = (loss_before - loss_after) / loss_before covers both losses
        for name in [c for c in covered if c in assigned]:
            covered |= _chains(assigned[name])
    problems = []
    for which, arg in (("before", call.args[1]), ("after", call.args[2])):
        missing = sorted(_chains(arg) - covered)
        if missing:
            problems.append(f"the headline's {which} figure {ast.unparse(arg)!r} reads {', '.join(missing)}, which no "
                            "Self-check assert tests (directly or through a name computed from it)")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_headline_is_a_figure_the_self_check_asserts(path):
    """The before -> after a lab prints as "Self-check passed: ..." is a quantity its asserts test: each reference
    its before and after expressions read appears in a Self-check assert, or in the assignment of a name one reads
    (two steps deep)."""
    problems = headline_problems(_cells(path))
    assert not problems, f"{path.name}: " + "\n".join(problems)


def test_the_headline_rule_catches_a_figure_nothing_asserts():
    def cells(*sources):
        return [nbformat.v4.new_markdown_cell("## Self-check"), *map(nbformat.v4.new_code_cell, sources)]

    setup = nbformat.v4.new_code_cell(
        "acc_before, acc_after = result.accuracy('before'), result.accuracy('after')\n"
        "fmt_before, fmt_after = result.accuracy('before', 'f'), result.accuracy('after', 'f')")
    unasserted = [setup, *cells("assert result.improved > MIN\n"
                                "lh.print_self_check('accuracy', acc_before, acc_after)")]
    assert len(headline_problems(unasserted)) == 2
    asserted = [setup, *cells("gain = fmt_after - fmt_before\nassert gain >= MIN_GAIN\n"
                              "lh.print_self_check('broken format', fmt_before, fmt_after)")]
    assert not headline_problems(asserted)
    direct = [setup, *cells("assert fmt_after > fmt_before + MIN\nlh.print_self_check('f', fmt_before, fmt_after)")]
    assert not headline_problems(direct)


def _bench_bounds() -> dict:
    import importlib.util

    path = LABS.parent / "bench" / "preference_effect.py"
    spec = importlib.util.spec_from_file_location("preference_effect", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.BOUNDS


@pytest.mark.parametrize("lab, method", [("06", "dpo"), ("07", "simpo"), ("08", "orpo"), ("09", "kto")])
def test_the_preference_bench_checks_the_bounds_the_labs_assert(lab, method):
    """bench/preference_effect.py chooses the bounds on a tuning slice: they must be the ones the lab asserts."""
    path = next(LABS.glob(f"{lab}_*.ipynb"))
    cells = _cells(path)
    constants = {}
    for i in _self_check_cells(cells):
        for node in ast.walk(_parse(cells[i].source)):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                try:
                    value = ast.literal_eval(node.value)
                except ValueError:  # not a literal: a measured value, not a bound
                    continue
                if isinstance(value, int | float):
                    constants[node.targets[0].id] = float(value)
    for _figure, const, bound, _how in _bench_bounds()[method]:
        name, sign = (const[1:], -1.0) if const.startswith("-") else (const, 1.0)
        assert name in constants, f"lab {lab}'s Self-check no longer names {name} (bench/preference_effect.py BOUNDS)"
        assert sign * constants[name] == bound, f"lab {lab}: {name} = {constants[name]}, the bench checks {bound}"
