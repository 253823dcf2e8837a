"""A small interpreter for the subset of Go's ``text/template`` that Ollama's chat templates use.

``parse(text)`` lexes and parses a template into a tree of ``Node``; ``Template.execute(data)`` runs it
with Go's semantics under ``Option("missingkey=zero")``, as Ollama parses templates. Which data a template
gets, and Ollama's legacy per-turn runs, are Ollama's rules: see ``labhelpers.deploy.ollama``.

The subset: text with ``{{- ``/`` -}}`` trim markers and ``{{/* comments */}}``; ``{{ pipeline }}``;
``if``/``else if``/``else``, ``with``/``else``, ``range`` (``$v :=``, ``$i, $v :=``, ``else``, ``break``,
``continue``) and ``end``; variables ``$``, ``$x := ...``, ``$x = ...``; fields ``.A.B``, ``$x.A``,
``(pipeline).A``; string (Go escapes), raw-string, decimal int, ``true``/``false``/``nil`` literals; the
functions ``and or not eq ne lt le gt ge len index slice printf`` (printf: ``%s %d %v %%``). Anything else
-- ``|`` pipelines, named templates, other functions, floats -- raises ``ValueError`` naming it, at parse
time, or when reached for Ollama's own functions (``json``, ``currentDate``...), never a different text.

Go values as Python values: a map is a ``dict``; a missing key (or a key holding None) is Go's nil
interface -- the zero value of Ollama's ``map[string]any`` -- so it is false and prints ``<no value>``.
A struct is a ``Struct`` (an unknown field is an error), a slice a ``list`` (nil and empty slices are not
told apart), strings, ints and bools are themselves; None is Go's "no value" (an invalid reflect.Value).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_TOKEN = re.compile(r"""(?P<space>[ \t\r\n]+) | (?P<string>"(?:[^"\\\n]|\\.)*") | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\\n]|\\.)*') | (?P<number>[-+]?\.?\d[\w.]*) | (?P<punct>:=|[=|(),])
  | (?P<variable>\$\w*) | (?P<field>\.\w+) | (?P<dot>\.) | (?P<word>\w+)""", re.X)
_SPACE = " \t\r\n"  # what trim markers remove
_CONTROL = {"if", "else", "end", "range", "with", "break", "continue", "define", "template", "block"}
_ESCAPE = re.compile(r'\\(x[0-9a-fA-F]{2}|[0-7]{3}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)')
_SIMPLE = dict(zip('abfnrtv\\"', '\a\b\f\n\r\t\v\\"', strict=True))
_NIL = object()  # Go's nil interface from a map: treated as None, except that a field of it is an error


@dataclass
class Struct:
    """A Go struct (or a pointer to one): named fields; an unknown field is an error, unlike a map key."""

    type_name: str
    fields: dict[str, Any]


@dataclass
class Operand:
    """An argument: kind field|var|dot|pipe|func|str|int|bool|nil, then ``fields`` (``.A.B``, ``$x.A``)."""

    kind: str
    value: Any = None  # var/func: its name; pipe: a Pipe; literals: the value
    fields: list[str] = field(default_factory=list)


@dataclass
class Pipe:
    """One command (a function and its arguments, or a single operand) and the variables it declares."""

    args: list[Operand]
    decl: list[str] = field(default_factory=list)
    assign: bool = False  # ``$x = ...`` sets an existing variable


@dataclass
class Node:
    """kind text|action|if|with|range|break|continue: ``text``, or ``pipe`` (+ ``body``/``else_``).

    ``{{ else if p }}`` is an ``if`` Node alone in the ``else_`` of the outer one, as in Go's parser.
    """

    kind: str
    text: str = ""
    pipe: Pipe | None = None
    body: list[Node] = field(default_factory=list)
    else_: list[Node] | None = None


def _lex(text: str) -> list[tuple[str, Any, str]]:
    """("text", text, "") and ("action", tokens, source) items, trim markers and comments applied."""
    items: list[tuple[str, Any, str]] = []
    pos, trim_next = 0, False
    while True:
        start = text.find("{{", pos)
        chunk = text[pos:] if start < 0 else text[pos:start]
        trim = start >= 0 and text[start + 2 : start + 3] == "-" and text[start + 3 : start + 4] in tuple(_SPACE)
        chunk = chunk.lstrip(_SPACE) if trim_next else chunk
        if chunk := chunk.rstrip(_SPACE) if trim else chunk:
            items.append(("text", chunk, ""))
        if start < 0:
            return items
        pos, tokens = start + 2 + 2 * trim, []
        if text.startswith("/*", pos):  # {{/* comment */}}: must end right at the delimiter
            end = text.find("*/", pos)
            trim_next = end >= 0 and text[end + 2 : end + 3] in tuple(_SPACE) and text.startswith("-}}", end + 3)
            if end < 0 or not text.startswith("}}", end + 2 + 2 * trim_next):
                raise ValueError(f"unclosed comment (or text after its */) at {text[start:start + 30]!r}")
            pos = end + 4 + 2 * trim_next
            continue
        while not text.startswith("}}", pos):
            m = _TOKEN.match(text, pos)
            if not m:
                raise ValueError(f"unclosed action {text[start:start + 30]!r}" if pos >= len(text)
                                 else f"unexpected {text[pos]!r} in {text[start:pos + 1]!r}")
            if m.lastgroup == "space" and text.startswith("-}}", m.end()):
                break
            tokens.append((m.group() if m.lastgroup == "punct" else m.lastgroup, m.group()))
            pos = m.end()
        trim_next = not text.startswith("}}", pos)
        pos = text.index("}}", pos) + 2
        items.append(("action", tokens, text[start:pos]))


class _Parser:
    """Recursive descent over the lexed items; ``toks[k:]`` is what is left of the current action."""

    def __init__(self, text: str):
        self.items, self.i, self.ranges, self.scope = _lex(text), 0, 0, ["$"]
        self.toks: list[tuple[str, str]] = []
        self.k, self.src = 0, ""

    def error(self, message: str) -> ValueError:
        return ValueError(f"{message} in {self.src!r}")

    def peek(self, skip_space: bool = True) -> tuple[str, str]:
        while skip_space and self.k < len(self.toks) and self.toks[self.k][0] == "space":
            self.k += 1
        return self.toks[self.k] if self.k < len(self.toks) else ("end", "}}")

    def take(self, skip_space: bool = True) -> tuple[str, str]:
        token = self.peek(skip_space)
        self.k += 1
        return token

    def keyword(self) -> str | None:
        kind, word = self.peek()
        if kind != "word" or word not in _CONTROL:
            return None
        self.k += 1
        return word

    def expect_end(self, after: str) -> None:
        if self.peek()[0] != "end":
            raise self.error(f"unexpected {self.peek()[1]!r} after {after}")

    def nodes(self, stops: tuple[str, ...] = ()) -> tuple[list[Node], str]:
        """Nodes up to the ``{{ end }}`` or ``{{ else }}`` in ``stops``: the nodes and that word."""
        out: list[Node] = []
        while self.i < len(self.items):
            kind, value, self.src = self.items[self.i]
            self.i += 1
            if kind == "text":
                out.append(Node("text", value))
                continue
            self.toks, self.k = value, 0
            word = self.keyword()
            if word in stops:
                return out, word
            if word in ("if", "with", "range"):
                out.append(self.control(word))
            elif word in ("break", "continue") and self.ranges:
                self.expect_end(word)
                out.append(Node(word))
            elif word in ("define", "template", "block"):
                raise self.error(f"{{{{ {word} }}}} (named templates) is not supported")
            elif word:
                raise self.error(f"unexpected {{{{ {word} }}}}")
            else:
                out.append(Node("action", pipe=self.pipeline("command", "end")))
        if stops:
            raise ValueError("unexpected end of template: missing {{ end }}")
        return out, ""

    def control(self, kind: str) -> Node:
        scope = len(self.scope)  # variables declared from here on are gone after {{ end }}
        node = Node(kind, pipe=self.pipeline(kind, "end"))
        self.ranges += kind == "range"
        node.body, stop = self.nodes(("end", "else"))
        self.ranges -= kind == "range"
        if stop == "else":
            nested = self.keyword()
            if nested == "if" == kind:  # {{ else if }}: a nested if that shares this {{ end }}
                node.else_ = [self.control("if")]
            elif nested:
                raise self.error(f"{{{{ else {nested} }}}} in {{{{ {kind} }}}} is not supported")
            else:
                self.expect_end("else")
                node.else_, _ = self.nodes(("end",))
                self.expect_end("end")
        else:
            self.expect_end("end")
        del self.scope[scope:]
        return node

    def pipeline(self, context: str, end: str) -> Pipe:
        decl, assign, start = [], False, self.k
        while self.peek()[0] == "variable":  # $x := ..., $x = ..., and in a range $i, $x := ...
            name, sep = self.take()[1], self.take()[0]
            if sep == "," and context == "range" and not decl:
                decl.append(name)
                continue
            if sep in (":=", "="):
                decl, assign = [*decl, name], sep == "="
            elif decl or sep == ",":
                raise self.error(f"bad variable declaration in {context}")
            else:
                self.k = start  # no declaration: the variable is the first operand
            break
        else:
            if decl:
                raise self.error("range can only initialize variables")
        if assign and context == "range":
            raise self.error("range with '=' (assigning existing variables) is not supported")
        self.scope += decl
        args = []
        while self.peek()[0] not in ("end", end):
            args.append(self.operand())
            if self.peek(skip_space=False)[0] not in ("space", "end", end):
                raise self.error(f"{self.peek()[1]!r} right after an operand is not supported")
        if self.take()[0] != end:
            raise self.error("unclosed left paren")
        if not args or args[0].kind == "nil" or (len(args) > 1 and args[0].kind != "func"):
            raise self.error(f"missing value for {context}" if not args else "can't give arguments to a non-function")
        return Pipe(args, decl, assign)

    def operand(self) -> Operand:
        kind, text = self.take()
        if kind == "word" and text in ("true", "false", "nil"):
            op = Operand("nil") if text == "nil" else Operand("bool", text == "true")
        elif kind == "word" and (text in _FUNCS or text in _OLLAMA_FUNCS):
            op = Operand("func", text)
        elif kind == "variable" and text in self.scope:
            op = Operand("var", text)
        elif kind in ("field", "dot"):
            op = Operand(kind, fields=[text[1:]] if kind == "field" else [])
        elif kind in ("string", "raw"):
            op = Operand("str", self.unquote(text) if kind == "string" else text[1:-1].replace("\r", ""))
        elif kind == "number" and re.fullmatch(r"[-+]?(0|[1-9]\d*)", text):
            op = Operand("int", int(text))
        elif kind == "(":
            op = Operand("pipe", self.pipeline("parenthesized pipeline", ")"))
        elif kind == "variable":
            raise self.error(f"undefined variable {text}")
        elif kind == "|":
            raise self.error("'|' pipelines are not supported")
        else:
            what = {"word": "keyword" if text in _CONTROL else "function", "char": "character constant",
                    "number": "number literal"}.get(kind, "token")
            raise self.error(f"{what} {text!r} is not supported" + (" in an operand" if text in _CONTROL else ""))
        while self.peek(skip_space=False)[0] == "field":
            if op.kind not in ("field", "var", "pipe"):
                raise self.error(f"a field after {text!r} is not supported")
            op.fields.append(self.take(skip_space=False)[1][1:])
        return op

    def unquote(self, literal: str) -> str:
        def escape(m: re.Match) -> str:
            e = m.group(1)
            if e in _SIMPLE:
                return _SIMPLE[e]
            if len(e) > 1:  # \xHH and \ooo are bytes: only ASCII ones make a whole character
                code = int(e, 8) if e[0].isdigit() else int(e[1:], 16)
                if code < (0x80 if e[0] in "x01234567" else 0x110000) and not 0xD800 <= code < 0xE000:
                    return chr(code)
            raise self.error(f"escape \\{e} in {literal} is not supported (or not Go)")

        return _ESCAPE.sub(escape, literal[1:-1])


# ------------------------------------------------------------------------------------------ execution
def _kind(v: Any) -> str:
    if v is None or v is _NIL:
        return "nil"
    if isinstance(v, Struct):
        return v.type_name
    names = {bool: "bool", int: "int", str: "string", list: "slice", dict: "map"}
    return next((n for t, n in names.items() if isinstance(v, t)), type(v).__name__)


def _truth(v: Any) -> bool:
    return v is not None and v is not _NIL and bool(v)  # a Struct is always true


def _text(v: Any, nil: str) -> str:
    """How fmt prints a scalar; ``nil``: how no value prints (``<no value>`` for an action, else ``<nil>``)."""
    if v is None:
        return nil
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, str)):
        return str(v)
    raise ValueError(f"printing a {_kind(v)} value is not supported")


def _eq(a: Any, *others: Any) -> bool:
    """Go's eq: ``a`` equals any of ``others``; basic values of different kinds are an error, nil equals nil."""
    if not others:
        raise ValueError("eq: missing argument for comparison")
    basic = {"bool", "int", "string"}
    for b in others:
        ka, kb = _kind(a), _kind(b)
        if ka in basic and kb in basic:
            if ka != kb:
                raise ValueError(f"eq: incompatible types for comparison: {ka} and {kb}")
            if a == b:
                return True
        elif ka == kb == "nil":
            return True
        elif "nil" not in (ka, kb) or not {ka, kb} & basic:  # nil vs a string, int or bool is just false
            raise ValueError(f"eq of {ka} and {kb} values is not supported")
    return False


def _lt(a: Any, b: Any) -> bool:
    if _kind(a) not in ("int", "string") or _kind(a) != _kind(b):
        raise ValueError(f"lt/le/gt/ge of {_kind(a)} and {_kind(b)} values is not supported")
    return a < b


def _sequence(v: Any, what: str) -> list | bytes:
    """A list, or a string's UTF-8 bytes (Go indexes and slices strings by byte)."""
    if not isinstance(v, (list, str)):
        raise ValueError(f"{what} of a {_kind(v)} value is not supported")
    return v.encode() if isinstance(v, str) else v


def _position(i: Any, limit: int, what: str) -> int:
    if _kind(i) != "int" or not 0 <= i <= limit:
        raise ValueError(f"{what}: index {i!r} is out of range or not an int")
    return i


def _len(v: Any) -> int:
    return len(v) if isinstance(v, dict) else len(_sequence(v, "len"))


def _index(item: Any, *indexes: Any) -> Any:
    """index x i j: x[i][j]; a map's missing key gives nil, a string's element is a byte (an int)."""
    for i in indexes:
        if isinstance(item, dict) and isinstance(i, str):
            item = item.get(i)
        else:
            seq = _sequence(item, "index")
            item = seq[_position(i, len(seq) - 1, "index")]
    return item


def _slice(item: Any, *indexes: Any) -> Any:
    """slice x, slice x i, slice x i j: x[:], x[i:], x[i:j] (of a string's bytes: a whole UTF-8 text)."""
    if len(indexes) > 2:
        raise ValueError("slice with 3 indexes is not supported")
    seq = _sequence(item, "slice")
    bounds = [0, len(seq)]
    bounds[: len(indexes)] = [_position(i, len(seq), "slice") for i in indexes]
    if bounds[0] > bounds[1]:
        raise ValueError(f"slice: invalid indexes {bounds[0]} > {bounds[1]}")
    part = seq[bounds[0] : bounds[1]]
    try:
        return part.decode() if isinstance(part, bytes) else part
    except UnicodeDecodeError:
        raise ValueError("slice: cutting a string inside a UTF-8 character is not supported") from None


def _printf(form: Any, *values: Any) -> str:
    """fmt.Sprintf with the verbs %s (of a string), %d (of an int), %v (of a scalar) and %%."""
    if not isinstance(form, str):
        raise ValueError("printf: the format is not a string")
    parts, args = re.split(r"(%.?)", form), list(values)
    for n in range(1, len(parts), 2):
        if parts[n] == "%%":
            parts[n] = "%"
            continue
        kind = _kind(args[0]) if args else "missing"
        if kind == "missing" or {"%s": "string", "%d": "int", "%v": kind}.get(parts[n]) != kind:
            raise ValueError(f"printf: {parts[n]!r} of a {kind} value is not supported")
        parts[n] = _text(args.pop(0), "<nil>")
    if args:
        raise ValueError(f"printf: {len(args)} extra argument(s) is not supported")
    return "".join(parts)


_FUNCS: dict[str, Callable[..., Any] | None] = {
    "and": None, "or": None,  # short-circuit: evaluated by _Run.call
    "not": lambda a: not _truth(a), "eq": _eq, "ne": lambda a, b: not _eq(a, b), "lt": _lt,
    "le": lambda a, b: _lt(a, b) or _eq(a, b), "gt": lambda a, b: not (_lt(a, b) or _eq(a, b)),
    "ge": lambda a, b: not _lt(a, b), "len": _len, "index": _index, "slice": _slice, "printf": _printf,
}  # fmt: skip
_ARITY = {"not": 1, "ne": 2, "lt": 2, "le": 2, "gt": 2, "ge": 2, "len": 1}  # others: at least one
_OLLAMA_FUNCS = ("json", "currentDate", "yesterdayDate", "toTypeScriptType")  # parse; fail when called


def _field(value: Any, name: str) -> Any:
    """``value.name``: a map's missing key is nil; nothing's field is nothing; nil's field is an error."""
    if value is None:
        return None
    if isinstance(value, Struct):
        if name in value.fields:
            return value.fields[name]
    elif isinstance(value, dict):
        return _NIL if value.get(name) is None else value[name]
    elif value is _NIL:
        raise ValueError(f"nil pointer evaluating interface {{}}.{name}")
    raise ValueError(f"can't evaluate field {name} in type {_kind(value)}")


class _Jump(Exception):
    """{{ break }} or {{ continue }} (its ``args[0]``), caught by the enclosing range."""


class _Run:
    """One execution: the output so far and Go's push-down stack of variables ([name, value] pairs)."""

    def __init__(self, data: Any):
        self.out: list[str] = []
        self.vars: list[list[Any]] = [["$", data]]

    def lookup(self, name: str) -> list[Any]:
        for entry in reversed(self.vars):
            if entry[0] == name:
                return entry
        raise ValueError(f"undefined variable: {name}")  # assigned ($x = ...) before any $x :=

    def walk(self, dot: Any, nodes: list[Node]) -> None:
        for node in nodes:
            if node.kind == "text":
                self.out.append(node.text)
            elif node.kind == "action":
                value = self.pipe(dot, node.pipe)
                self.out += [] if node.pipe.decl else [_text(value, "<no value>")]
            elif node.kind in ("break", "continue"):
                raise _Jump(node.kind)
            else:
                mark = len(self.vars)  # variables declared inside go at the end, as in Go
                try:
                    value = self.pipe(dot, node.pipe)
                    if node.kind == "range":
                        self.range(dot, node, value)
                    elif _truth(value):
                        self.walk(value if node.kind == "with" else dot, node.body)
                    elif node.else_ is not None:
                        self.walk(dot, node.else_)
                finally:
                    del self.vars[mark:]

    def range(self, dot: Any, node: Node, value: Any) -> None:
        if isinstance(value, dict):
            items = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, list) or value is None:
            items = list(enumerate(value or []))
        else:
            raise ValueError(f"range over a {_kind(value)} value is not supported")
        top = len(self.vars)  # the range's own variables are on top: [..., $i, $x]
        for key, elem in items:
            if node.pipe.decl:
                self.vars[top - 1][1] = elem
            if len(node.pipe.decl) == 2:
                self.vars[top - 2][1] = key
            try:
                self.walk(elem, node.body)
            except _Jump as jump:
                if jump.args[0] == "break":
                    break
            finally:
                del self.vars[top:]
        if not items and node.else_ is not None:
            self.walk(dot, node.else_)

    def pipe(self, dot: Any, pipe: Pipe) -> Any:
        first = pipe.args[0]
        value = self.call(dot, first.value, pipe.args[1:]) if first.kind == "func" else self.operand(dot, first)
        value = None if value is _NIL else value
        for name in pipe.decl:
            if pipe.assign:
                self.lookup(name)[1] = value
            else:
                self.vars.append([name, value])
        return value

    def operand(self, dot: Any, op: Operand) -> Any:
        if op.kind == "func":
            value = self.call(dot, op.value, [])
        elif op.kind == "var":
            value = self.lookup(op.value)[1]
        elif op.kind == "pipe":
            value = self.pipe(dot, op.value)
        else:
            value = dot if op.kind in ("field", "dot") else op.value
        for name in op.fields:
            value = _field(value, name)
        return value

    def call(self, dot: Any, name: str, args: list[Operand]) -> Any:
        if name in _OLLAMA_FUNCS:
            raise ValueError(f"Ollama's template function {name!r} is not supported by this emulator")
        if not args or len(args) != _ARITY.get(name, len(args)):
            raise ValueError(f"wrong number of arguments for {name}: {len(args)}")
        if name in ("and", "or"):  # the first false (and) / true (or) argument, else the last one
            for arg in args:
                value = self.operand(dot, arg)
                if _truth(value) == (name == "or"):
                    break
            return value
        function = _FUNCS[name]
        assert function is not None
        return function(*(None if v is _NIL else v for v in (self.operand(dot, arg) for arg in args)))


@dataclass
class Template:
    """A parsed template. ``execute(data)``: the text, with ``data`` as ``$`` and the first dot."""

    nodes: list[Node]

    def execute(self, data: Any) -> str:
        run = _Run(data)
        run.walk(data, self.nodes)
        return "".join(run.out)


def parse(text: str) -> Template:
    """Parse a Go template: ``ValueError`` names a syntax error or a construct outside the subset."""
    return Template(_Parser(text).nodes()[0])
