"""Two counts for labhelpers' size (issue 27), the same way before and after a change; run by hand.

    python bench/code_lines.py labhelpers          # code lines per module and in all
    python bench/code_lines.py --lab-names         # distinct labhelpers names the labs use

Code lines: lines holding a token other than a comment or a docstring (blank lines, comments and docstrings left
out). Lab names: every ``lh.<name>`` (and ``lh.deploy.<name>``, ``lh.distributed.<name>``, ``lh.envcheck.<name>``)
in the labs' code cells, plus, for code written before issue 27, ``module.<name>`` after ``from labhelpers import
module`` and names imported with ``from labhelpers.<module> import``. For an older commit:
``git archive <commit> labhelpers labs | tar -x -C /tmp/old && cd /tmp/old && python <this file> ...``.
"""

from __future__ import annotations

import argparse
import ast
import collections
import io
import json
import re
import tokenize
from pathlib import Path

NAMESPACES = ("deploy", "distributed", "harness", "envcheck")


def code_lines(path: Path) -> int:
    """Lines of ``path`` holding a token other than a comment, a line break, an indent or a docstring."""
    text = path.read_text()
    docstrings = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value,
                                                                                                     str):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    skip = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type not in skip:
            lines.update(n for n in range(tok.start[0], tok.end[0] + 1) if n not in docstrings)
    return len(lines)


def lab_names(labs: Path) -> dict[str, set[str]]:
    """Each distinct labhelpers name the labs use, with the labs that use it."""
    uses: dict[str, set[str]] = collections.defaultdict(set)
    for path in sorted(labs.glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        src = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        aliases = {"lh": ""}
        for match in re.finditer(r"^\s*from labhelpers(?:\.(\w+))?\s+import\s+\(?([^)\n]+)\)?", src, re.M):
            for part in filter(None, (p.strip() for p in match.group(2).split(","))):
                name, _, alias = part.partition(" as ")
                if match.group(1) is None:
                    aliases[(alias or name).strip()] = name.strip() + "."
                else:
                    uses[f"{match.group(1)}.{name.strip()}"].add(path.name[:2])
        for alias, prefix in aliases.items():
            for m in re.finditer(rf"(?<![\w.]){re.escape(alias)}\.(\w+)(?:\.(\w+))?", src):
                first, second = m.group(1), m.group(2)
                name = f"{first}.{second}" if alias == "lh" and second and first in NAMESPACES else prefix + first
                uses[name].add(path.name[:2])
    return uses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("package", nargs="?", default="labhelpers", type=Path)
    parser.add_argument("--lab-names", action="store_true", help="count the names the labs use instead")
    parser.add_argument("--labs", type=Path, default=Path("labs"))
    args = parser.parse_args()
    if args.lab_names:
        uses = lab_names(args.labs)
        for name in sorted(uses):
            print(f"{name:40s} {' '.join(sorted(uses[name]))}")
        print(f"{len(uses)} distinct labhelpers names in {args.labs}")
        return
    files = sorted(args.package.rglob("*.py"))
    counts = {f: code_lines(f) for f in files}
    for f, n in counts.items():
        print(f"{n:6d} {f}")
    print(f"{sum(counts.values())} code lines in {len(files)} files")


if __name__ == "__main__":
    main()
