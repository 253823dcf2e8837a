"""Deployment, step 3: a Modelfile whose chat format is the tokenizer's own, and Ollama create/chat.

How Ollama formats chats: a Modelfile ``TEMPLATE`` (a Go template) if given; otherwise, on
``ollama create`` from a GGUF, it compares the Jinja ``tokenizer.chat_template`` inside the GGUF
with its library of known templates and takes the closest one (``template.Named``: edit distance
< 100 characters), or falls back to ``{{ .Prompt }}`` -- the raw text, no chat format at all.

``ollama_template`` therefore *derives* the TEMPLATE mechanically: it renders the tokenizer's chat
template with placeholder strings, cuts the result at the placeholders and puts the Go fields there; a
default system prompt the template injects becomes the Modelfile's ``SYSTEM``. The per-turn form first
(``{{ .System }}``, ``{{ .Prompt }}``, ``{{ .Response }}``, run once per turn); where that cannot hold the chat
(Llama 3.1 writes its dated system block into every chat, with or without a system message), the ``.Messages``
form (``{{ range .Messages }}``, run once over the whole chat). It then re-renders several chats through
Ollama's rules (``render_ollama_prompt``) and keeps the TEMPLATE only if every one equals the HF rendering
exactly. ``render_ollama_prompt`` emulates Ollama's prompt building for any TEMPLATE of the Go
``text/template`` subset its library uses (interpreter: ``labhelpers.deploy.gotemplate``; checked byte for byte against
Ollama's own golden renderings of the 20 templates of its library, tests/deploy/test_ollama.py).
``served_differences`` names the kinds of chat Ollama would still build differently (Llama 3.1's
template trims message text; Ollama's template functions have no trim). Only a template neither form can
hold is *deferred* to Ollama's detection, said so in the Modelfile. No model family's format is typed by hand.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from labhelpers.deploy import gotemplate as gt
from labhelpers.deploy.merge import Stopwatch

OLLAMA_URL = "http://127.0.0.1:11434"  # only ever the local server
OPENAI_URL = f"{OLLAMA_URL}/v1/chat/completions"  # the same server, as OpenAI's chat API
_S, _P, _R, _P2 = "SYSTEM_q7x", "PROMPT_q7x", "RESPONSE_q7x", "PROMPT2_q7x"  # placeholders
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]*(:[a-zA-Z0-9._-]+)?$")
Messages = list[dict[str, str]]


class OllamaUnavailable(RuntimeError):
    """No Ollama here (binary or local server): the message gives the exact commands to run on the Spark."""


@dataclass
class OllamaTemplate:
    """A derived Go TEMPLATE (or None = defer to Ollama's detection), its default SYSTEM and the reason.

    ``turn_end``: the text the template writes after an assistant message (where the stop tokens are found).
    """

    template: str | None
    system: str | None
    reason: str
    turn_end: str = ""


@dataclass
class ModelfileInfo:
    """What ``write_modelfile`` wrote: the file, its text, and where its TEMPLATE came from."""

    path: Path
    text: str
    template: str | None
    system: str | None
    stop: list[str] = field(default_factory=list)
    template_source: str = "derived"  # or "deferred"
    reason: str = ""
    differences: list[str] = field(default_factory=list)  # PROBE_CHATS Ollama builds unlike the chat template

    def __str__(self) -> str:
        return self.text


def _render(tokenizer: Any, messages: Messages, gen: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)


def _identifiers(nodes: list[gt.Node]) -> set[str]:
    """Ollama's ``Template.Vars``: field and variable names in the tree, lower-cased (not those of ``(...).X``)."""
    names: set[str] = set()

    def pipe(p: gt.Pipe) -> None:
        for op in p.args:
            if op.kind in ("field", "var"):
                names.update(n.lower() for n in ([op.value] if op.kind == "var" else []) + op.fields)
            elif op.kind == "pipe" and not op.fields:
                pipe(op.value)

    for node in nodes:
        if node.pipe:
            pipe(node.pipe)
        names |= _identifiers(node.body + (node.else_ or []))
    return names


def _cut_after_response(nodes: list[gt.Node]) -> list[gt.Node]:
    """Ollama's ``deleteNode`` for the last legacy run: drop everything after the first ``.Response`` field.

    The same walk as Ollama's: list items; if/with/range bodies, then else lists (never their conditions);
    an action's arguments and parenthesised pipelines in them (not ``(...).X``).
    """
    cut = False

    def pipe(p: gt.Pipe) -> gt.Pipe:
        nonlocal cut
        args = []
        for op in p.args:
            if cut:
                break
            if op.kind == "field" and "Response" in op.fields:
                cut = True  # the .Response field itself stays
            elif op.kind == "pipe" and not op.fields:
                op = replace(op, value=pipe(op.value))
            args.append(op)
        return replace(p, args=args)

    def walk(ns: list[gt.Node]) -> list[gt.Node]:
        out: list[gt.Node] = []
        for n in ns:
            if cut:
                break
            if n.kind == "action":
                out.append(replace(n, pipe=pipe(n.pipe)))
            elif n.kind in ("if", "with", "range"):
                body = walk(n.body)
                if cut and n.else_ is not None:
                    raise ValueError(f"{{{{ .Response }}}} inside an {{{{ {n.kind} }}}} that has an {{{{ else }}}}: "
                                     "Ollama's legacy prompt cut fails on this template (a Go panic)")
                out.append(replace(n, body=body, else_=None if n.else_ is None else walk(n.else_)))
            else:
                out.append(n)
        return out

    return walk(nodes)


def _collate(messages: Messages) -> tuple[str, Messages]:
    """Ollama's ``collate``: all system contents joined, and consecutive same-role messages merged (not tool)."""
    system = "\n\n".join(m.get("content", "") for m in messages if m["role"] == "system")
    collated: Messages = []
    for m in messages:
        if collated and collated[-1]["role"] == m["role"] and m["role"] != "tool":
            collated[-1]["content"] += "\n\n" + m.get("content", "")
        else:
            collated.append({**m, "content": m.get("content", "")})
    return system, collated


def _message(m: dict[str, Any]) -> gt.Struct:
    """A chat message as Ollama's ``templateMessage`` struct (the fields a ``.Messages`` template can read)."""
    if m.get("images") or m.get("tool_calls"):
        raise ValueError("render_ollama_prompt does not emulate messages with images or tool_calls")
    return gt.Struct("*template.templateMessage", {
        "Role": m["role"], "Content": m["content"], "Thinking": m.get("thinking", ""), "Images": [],
        "ToolCalls": [], "ToolName": m.get("tool_name", ""), "ToolCallID": m.get("tool_call_id", "")})


def render_ollama_prompt(template: str, messages: Messages, system: str | None = None) -> str:
    """The prompt text Ollama's chat endpoint builds from a Modelfile TEMPLATE (Go template) for ``messages``.

    Mirrors ollama/ollama (commit fb30760, ``template/template.go`` and ``server/routes.go``):

    - ``system`` plays the Modelfile's ``SYSTEM``: like Ollama's chat handler, it is prepended as a system
      message only when the chat does not *start* with a system message (a later one does not count);
    - messages are collated: consecutive messages of one role are joined with a blank line (tool messages
      never are); ``System`` is every system message's content, joined the same way;
    - a template that mentions ``.Messages`` (Ollama's test: ``messages`` among its lower-cased field and
      variable names) runs once with ``System``, ``Messages`` (``.Role``, ``.Content``, ...), ``Tools``
      (none), ``Response`` = "", ``Think`` = false, ``ThinkLevel`` = "", ``IsThinkSet`` = false;
    - any other (legacy) template gets ``{{ .Response }}`` appended if it names neither ``.Response``
      nor ``.Messages``, runs once per user/assistant turn with ``System``/``Prompt``/``Response``, and
      the last run stops after the first ``{{ .Response }}``.

    The template language is the Go ``text/template`` subset of ``labhelpers.deploy.gotemplate``; any construct
    outside it (or an Ollama function such as ``json`` when reached) raises ``ValueError`` naming it.
    """
    msgs = [dict(m) for m in messages]
    if system and (not msgs or msgs[0]["role"] != "system"):
        msgs.insert(0, {"role": "system", "content": system})
    nodes = gt.parse(template).nodes
    names = _identifiers(nodes)
    if "messages" not in names and "response" not in names:
        nodes = [*nodes, gt.Node("action", pipe=gt.Pipe([gt.Operand("field", fields=["Response"])]))]
    system_text, collated = _collate(msgs)
    think = {"Think": False, "ThinkLevel": "", "IsThinkSet": False}
    if "messages" in names:
        return gt.Template(nodes).execute({"System": system_text, "Messages": [_message(m) for m in collated],
                                           "Tools": [], "Response": "", **think})
    out, turn = [], dict.fromkeys(("System", "Prompt", "Response"), "")
    for m in collated:
        role, content = m["role"], m["content"]
        if (role == "system" and (turn["Prompt"] or turn["Response"])) or (role == "user" and turn["Response"]):
            out.append(gt.Template(nodes).execute({**turn, **think}))
            turn = dict.fromkeys(turn, "")
        if role in ("system", "user", "assistant"):  # Ollama's legacy loop skips other roles (tool)
            turn[{"system": "System", "user": "Prompt", "assistant": "Response"}[role]] = content
    out.append(gt.Template(_cut_after_response(nodes)).execute({**turn, **think}))
    return "".join(out)


def _defer(reason: str) -> OllamaTemplate:
    return OllamaTemplate(None, None, reason)


def _trim_final_eos(full: str, two: str, eos: str) -> str:
    """A template that ends a finished chat with EOS (Phi-3) but not a continued one: that EOS is not per turn."""
    if eos and not two.startswith(full) and full.endswith(eos) and two.startswith(full[: -len(eos)]):
        return full[: -len(eos)]
    return full


def _without_system(render: Any, full: str, two: str, user_only: str, eos: str) -> OllamaTemplate:
    """The TEMPLATE of a chat template without a system role: user and assistant turns only, checked exactly."""
    full = _trim_final_eos(full, two, eos)
    if any(full.count(p) != 1 for p in (_P, _R)) or not full.index(_P) < full.index(_R):
        return _defer("the chat template does not keep user and assistant text in order")
    c, rest = full.split(_P)
    x, f = rest.split(_R)
    if user_only != c + _P + x or two != full + c + _P2 + x:
        return _defer("its turns do not repeat one format (or it writes a default system block)")
    if any("{{" in p or '"""' in p for p in (c, x, f)):
        return _defer("its text contains '{{' or '\"\"\"', which a Modelfile TEMPLATE cannot hold verbatim")
    template = f"{{{{ if .Prompt }}}}{c}{{{{ .Prompt }}}}{x}{{{{ end }}}}{{{{ .Response }}}}{f}"
    for chat in _CHECK_CHATS:
        if chat[0]["role"] != "system" and render_ollama_prompt(template, chat) != render(chat, True):
            return _defer(f"the derived TEMPLATE does not reproduce the {'/'.join(m['role'] for m in chat)} chat")
    return OllamaTemplate(template, None, "derived from the tokenizer's chat template; reproduces it exactly for "
                          "user and multi-turn chats (the template has no system role, so neither has the TEMPLATE)",
                          turn_end=f)


def ollama_template(tokenizer: Any, add_bos: bool = False) -> OllamaTemplate:
    """Derive an Ollama TEMPLATE (+ default SYSTEM) from the tokenizer's chat template, checked exactly.

    The per-turn (legacy) form first; where it cannot express the chat, the ``.Messages`` form
    (``_messages_template``). ``add_bos``: llama.cpp adds the BOS token itself (GGUF
    ``tokenizer.ggml.add_bos_token``), so a leading BOS the chat template writes is left out of the TEMPLATE.
    """
    legacy, render = _legacy_template(tokenizer, add_bos)
    if legacy.template is not None:
        return legacy
    messages = _messages_template(render, getattr(tokenizer, "all_special_tokens", ()))
    if messages.template is not None:
        return messages
    return _defer(f"{legacy.reason}; as a .Messages template: {messages.reason}")


def _legacy_template(tokenizer: Any, add_bos: bool) -> tuple[OllamaTemplate, Any]:
    """The per-turn TEMPLATE (``.System``/``.Prompt``/``.Response``) if it reproduces the chat template, and the
    renderer (the chat template, minus the BOS llama.cpp adds) the ``.Messages`` derivation reuses."""
    bos = tokenizer.bos_token if add_bos and tokenizer.bos_token else ""

    def render(messages: Messages, gen: bool) -> str:
        text = _render(tokenizer, messages, gen)
        return text[len(bos):] if bos and text.startswith(bos) else text

    sys_m, user_m, asst_m = ({"role": r, "content": c} for r, c in (("system", _S), ("user", _P), ("assistant", _R)))
    user2 = {"role": "user", "content": _P2}
    eos = getattr(tokenizer, "eos_token", None) or ""
    try:
        user_only = render([user_m], True)
        no_system = _without_system(render, render([user_m, asst_m], False), render([user_m, asst_m, user2], True),
                                    user_only, eos)
    except Exception as err:  # a template that needs extra variables
        return _defer(f"the chat template cannot render a user+assistant chat ({err})"), render
    try:
        full = render([sys_m, user_m, asst_m], False)
        gen1 = render([sys_m, user_m], True)
        two = render([sys_m, user_m, asst_m, user2], True)
    except Exception:  # the template refuses a system message (Gemma, Mistral): derive the chat turns alone
        return no_system, render
    full = _trim_final_eos(full, two, eos)
    if any(full.count(p) != 1 for p in (_S, _P, _R)) or not full.index(_S) < full.index(_P) < full.index(_R):
        return _defer("the chat template does not keep system, user and assistant text in order"), render
    a, rest = full.split(_S)
    bc, rest = rest.split(_P)
    x, f = rest.split(_R)
    if gen1 != a + _S + bc + _P + x:
        return _defer("its generation prompt is not the prefix of an assistant turn"), render
    if not two.startswith(full) or _P2 not in two:
        return _defer("earlier turns render differently from the last one"), render
    c = two[len(full) : two.index(_P2)]
    if two != full + c + _P2 + x or not bc.endswith(c):
        return _defer("a second user turn does not repeat the first turn's format"), render
    b = bc[: len(bc) - len(c)] if c else bc
    system = None
    if user_only != c + _P + x:
        tail = b + c + _P + x
        if not (user_only.startswith(a) and user_only.endswith(tail)) or len(user_only) <= len(a) + len(tail):
            return _defer("without a system message it writes a system block Ollama cannot express"), render
        system = user_only[len(a) : len(user_only) - len(tail)]
    pieces = (a, b, c, x, f)
    if any("{{" in p or '"""' in p for p in pieces):
        return _defer("its text contains '{{' or '\"\"\"', which a Modelfile TEMPLATE cannot hold verbatim"), render
    template = (f"{{{{ if .System }}}}{a}{{{{ .System }}}}{b}{{{{ end }}}}"
                f"{{{{ if .Prompt }}}}{c}{{{{ .Prompt }}}}{x}{{{{ end }}}}{{{{ .Response }}}}{f}")
    for chat in _CHECK_CHATS:
        if render_ollama_prompt(template, chat, system) != render(chat, True):
            roles = "/".join(m["role"] for m in chat)
            return _defer(f"the derived TEMPLATE does not reproduce the {roles} chat"), render
    return OllamaTemplate(template, system, "derived from the tokenizer's chat template; reproduces it exactly "
                          "for user, system+user and multi-turn chats", turn_end=f), render


def _inside_a_token(text: str, cut: int, specials: Sequence[str]) -> bool:
    """Does position ``cut`` of ``text`` fall inside one of the special tokens written there?"""
    return any(i < cut < i + len(t) for t in specials if t for i in range(len(text)) if text.startswith(t, i))


def _messages_template(render: Any, specials: Sequence[str] = ()) -> OllamaTemplate:
    """A ``.Messages`` TEMPLATE, which Ollama runs once over the whole chat, cut from placeholder renderings.

    The chat template's text is split into a head ``N`` written once (without a system message; with one, the
    system block ``A`` + system text + ``B``), each user message between ``U1`` and ``U2``, each assistant message
    between ``R1`` and ``R2``, and the generation prompt ``G``. That form holds what a per-turn TEMPLATE would repeat
    on every turn: Llama 3.1's system block, written into every chat, or a BOS token the template writes itself
    where llama.cpp does not add it. Kept only if Ollama's rendering of every check chat equals the chat template's.
    """
    sys_m, user_m, asst_m = ({"role": r, "content": c} for r, c in (("system", _S), ("user", _P), ("assistant", _R)))
    user2 = {"role": "user", "content": _P2}
    try:
        u, u_open, two = render([user_m], True), render([user_m], False), render([user_m, asst_m, user2], True)
    except Exception as err:  # a template that needs extra variables
        return _defer(f"the chat template cannot render a user+assistant chat ({err})")
    try:
        su = render([sys_m, user_m], True)
    except Exception:  # no system role (Gemma, Mistral): no system block to write
        su = None
    if any(t.count(p) != 1 for t, ps in ((u, (_P,)), (u_open, (_P,)), (two, (_P, _R, _P2)), (su or _S + _P, (_S, _P)))
           for p in ps):  # fmt: skip
        return _defer("the chat template does not write each message once")
    z, u2 = u_open.split(_P)  # N U1 | U2
    tail = u[u.index(_P) + len(_P) :]  # U2 G
    if not (u.startswith(z + _P) and two.startswith(z + _P) and two.endswith(_P2 + tail) and tail.startswith(u2)):
        return _defer("a later turn changes how the first one is written")
    x1, rest = two[len(z + _P) :].split(_R)  # U2 R1 | R2 U1 P2 U2 G
    x2 = rest[: rest.index(_P2)]  # R2 U1
    if not x1.startswith(u2):
        return _defer("a user message does not end the same way in every chat")
    gen, r1 = tail[len(u2) :], x1[len(u2) :]
    if x2.startswith(u2) and z.endswith(x2[len(u2) :]):  # each message ends alike (Llama 3.1: <|eot_id|>)
        r2, u1 = u2, x2[len(u2) :]
    else:  # else the longest text every user message starts with: the common end of what precedes one,
        k = len(os.path.commonprefix([x2[::-1], z[::-1]]))  # never cutting a special token in two
        while k and (_inside_a_token(x2, len(x2) - k, specials) or _inside_a_token(z, len(z) - k, specials)):
            k -= 1
        u1, r2 = x2[len(x2) - k :], x2[: len(x2) - k]
    n, system, head = z[: len(z) - len(u1)], None, ""
    pieces = [n, u1, u2, r1, r2, gen]
    if su is None:
        head = n  # written once: a BOS token, say
    else:
        a, y = su[: su.index(_S)], su[su.index(_S) + len(_S) : su.index(_P)]  # A | B U1
        if not (y.endswith(u1) and su.endswith(_P + tail)):
            return _defer("with a system message the first user message is written differently")
        b = y[: len(y) - len(u1)]
        pieces += [a, b]
        if n == a + b:  # a system block in every chat, empty without a system message (Llama 3.1)
            head = f"{a}{{{{ .System }}}}{b}"
        elif n == "":
            head = f"{{{{ if .System }}}}{a}{{{{ .System }}}}{b}{{{{ end }}}}"
        elif n.startswith(a) and n.endswith(b):  # a default system prompt: the Modelfile's SYSTEM, always sent
            head, system = f"{a}{{{{ .System }}}}{b}", n[len(a) : len(n) - len(b)]
        else:
            return _defer("without a system message it writes a block that is not its system block")
    if any("{{" in p or '"""' in p for p in pieces):
        return _defer("its text contains '{{' or '\"\"\"', which a Modelfile TEMPLATE cannot hold verbatim")
    template = (f"{head}{{{{ range .Messages }}}}{{{{ if eq .Role \"user\" }}}}{u1}{{{{ .Content }}}}{u2}"
                f"{{{{ else if eq .Role \"assistant\" }}}}{r1}{{{{ .Content }}}}{r2}{{{{ end }}}}{{{{ end }}}}{gen}")
    for chat in _CHECK_CHATS:
        if su is None and chat[0]["role"] == "system":
            continue  # the chat template has no system role
        if render_ollama_prompt(template, chat, system) != render(chat, True):
            return _defer(f"the .Messages TEMPLATE does not reproduce the {'/'.join(m['role'] for m in chat)} chat")
    what = "its system block is in every chat" if su is not None and n else "it writes its start once per chat"
    return OllamaTemplate(template, system, f"derived from the tokenizer's chat template as a .Messages template "
                          f"({what}, which a per-turn template would repeat); reproduces it exactly for user"
                          f"{', system+user' if su is not None else ''} and multi-turn chats", turn_end=r2)


# Chats where Ollama's way of building a prompt can differ from the chat template's: (what, messages).
PROBE_CHATS: list[tuple[str, Messages]] = [
    ("message text that starts or ends with spaces or newlines",
     [{"role": "user", "content": "  Which lab covers DPO? \n"}]),
    ("two user messages in a row (Ollama joins them with a blank line)",
     [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Which lab covers DPO?"}]),
    ("a system message after the first turn",
     [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
      {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Which lab covers DPO?"}]),
    ("two system messages (Ollama's .System joins them)",
     [{"role": "system", "content": "Be brief."}, {"role": "system", "content": "Answer in English."},
      {"role": "user", "content": "Which lab covers DPO?"}]),
]  # fmt: skip


def served_differences(tokenizer: Any, template: str, system: str | None = None, add_bos: bool = False) -> list[str]:
    """The probe chats (``PROBE_CHATS``) that Ollama would build differently from the chat template, by name.

    A chat the chat template itself refuses (roles that must alternate) is not a difference; the check chats of
    the derivation are equal by construction.
    """
    bos = tokenizer.bos_token if add_bos and tokenizer.bos_token else ""
    found = []
    for what, chat in PROBE_CHATS:
        try:
            expected = _render(tokenizer, chat, True)
        except Exception:  # the chat template refuses this chat: nothing to compare
            continue
        if render_ollama_prompt(template, chat, system) != expected.removeprefix(bos):
            found.append(what)
    return found


_CHECK_CHATS: list[Messages] = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
     {"role": "user", "content": "2+2?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"}],
]


def _stop_tokens(tokenizer: Any, turn_end: str, folder: Path | None) -> list[str]:
    """EOS, the generation config's EOS ids, and the special tokens that close an assistant turn."""
    stops = [tokenizer.eos_token]
    config = folder / "generation_config.json" if folder else None
    if config and config.is_file():
        eos = json.loads(config.read_text()).get("eos_token_id")
        stops += tokenizer.convert_ids_to_tokens(eos if isinstance(eos, list) else [eos]) if eos is not None else []
    stops += [t for t in tokenizer.all_special_tokens if t and t in turn_end]
    return list(dict.fromkeys(s for s in stops if s))


def _quote(text: str) -> str:
    return f'"""{text}"""'


def write_modelfile(
    gguf: str | os.PathLike[str],
    tokenizer: Any,
    system: str | None = None,
    params: dict[str, Any] | None = None,
    path: str | Path | None = None,
) -> ModelfileInfo:
    """Write an Ollama Modelfile for ``gguf``: FROM, TEMPLATE (derived, see module doc), SYSTEM, PARAMETERs.

    ``tokenizer``: the merged model's tokenizer or its folder. ``params`` adds or overrides
    PARAMETER lines (default ``temperature 0.7``; ``stop`` from EOS / end-of-turn tokens).
    ``path`` defaults to ``Modelfile`` next to the GGUF.
    """
    gguf = Path(gguf).expanduser().resolve()
    if not gguf.is_file():
        raise FileNotFoundError(f"{gguf} not found: write the Modelfile after export_gguf/quantize_gguf.")
    folder = None
    if isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        folder, tokenizer = Path(tokenizer), AutoTokenizer.from_pretrained(str(tokenizer))
    elif getattr(tokenizer, "name_or_path", None) and Path(tokenizer.name_or_path).is_dir():
        folder = Path(tokenizer.name_or_path)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("The tokenizer has no chat template: there is no chat format to give Ollama.")
    from labhelpers.deploy.gguf import read_gguf_header

    meta, _ = read_gguf_header(gguf)
    embedded = meta.get("tokenizer.chat_template")
    if embedded is not None and embedded != tokenizer.chat_template:
        raise ValueError(
            f"{gguf.name} embeds another chat template than this tokenizer: export it from the same folder.")
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    derived = ollama_template(tokenizer, add_bos=add_bos)
    stop = _stop_tokens(tokenizer, derived.turn_end, folder)
    values: dict[str, Any] = {"temperature": 0.7, **(params or {})}
    extra_stop = values.pop("stop", [])
    stop = list(dict.fromkeys(stop + ([extra_stop] if isinstance(extra_stop, str) else list(extra_stop))))
    out = Path(path).expanduser().resolve() if path else gguf.parent / "Modelfile"
    source = f"./{gguf.name}" if gguf.parent == out.parent else str(gguf)
    lines = [f"# Modelfile for {gguf.name}, written by labhelpers.write_modelfile", f"FROM {source}", ""]
    if derived.template:
        lines += [f"# TEMPLATE {derived.reason}.", f"TEMPLATE {_quote(derived.template)}", ""]
    else:
        lines += [
            f"# No TEMPLATE: {derived.reason}. Ollama matches the GGUF's embedded chat template against its",
            "# known templates; check the result with `ollama show NAME --template`.", "",
        ]
    system_text = system if system is not None else derived.system
    if system_text:
        origin = "given" if system is not None else "the chat template's default system prompt"
        lines += [f"# SYSTEM: {origin}.", f"SYSTEM {_quote(system_text)}", ""]
    lines += [f'PARAMETER stop "{s}"' for s in stop]
    lines += [f"PARAMETER {k} {v}" for k, v in values.items()]
    text = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    differences = served_differences(tokenizer, derived.template, system_text, add_bos) if derived.template else []
    return ModelfileInfo(out, text, derived.template, system_text, stop,
                         "derived" if derived.template else "deferred", derived.reason, differences)


def ollama_available(timeout: float = 1.0) -> bool:
    """True when the ``ollama`` binary is on PATH and the local server (127.0.0.1:11434) answers."""
    if shutil.which("ollama") is None:
        return False
    try:
        with urllib.request.urlopen(f"{OLLAMA_URL}/api/version", timeout=timeout) as resp:
            return resp.status == 200
    except (OSError, ValueError):
        return False


def _unavailable(name: str, modelfile: Path | None) -> OllamaUnavailable:
    binary = shutil.which("ollama") is not None
    why = "the Ollama server is not answering on 127.0.0.1:11434" if binary else "there is no `ollama` binary on PATH"
    folder = modelfile.parent if modelfile else Path("<folder with the Modelfile>")
    steps = ["ollama serve &    # if the server is not running yet"] if binary else []
    steps += [f"cd {folder}", f"ollama create {name} -f {modelfile.name if modelfile else 'Modelfile'}",
              f'ollama run {name} "Say hello in five words."']
    return OllamaUnavailable(
        f"Ollama is not available here ({why}), so run these in a terminal on the Spark (Ollama installed):\n  "
        + "\n  ".join(steps)
    )


@dataclass(frozen=True)
class CreateResult:
    """What ``ollama_create`` did: the model's name, Ollama's output (also ``str()``) and the wall time."""

    name: str
    output: str
    seconds: float

    def __str__(self) -> str:
        return self.output


def ollama_create(name: str, modelfile: str | os.PathLike[str], *, quantize: str | None = None,
                  timeout: float = 3600) -> CreateResult:
    """``ollama create NAME -f Modelfile`` (optionally ``--quantize q4_K_M``) against the local server; its output."""
    clock = Stopwatch()
    modelfile = Path(modelfile).expanduser().resolve()
    if not _NAME.match(name):
        raise ValueError(f"name={name!r}: Ollama model names are letters, digits, '.', '_', '-' (and ':tag').")
    if not modelfile.is_file():
        raise FileNotFoundError(f"{modelfile} not found: write it with write_modelfile().")
    if not ollama_available():
        raise _unavailable(name, modelfile)
    cmd = ["ollama", "create", name, "-f", str(modelfile)] + (["--quantize", quantize] if quantize else [])
    env = {**os.environ, "OLLAMA_HOST": OLLAMA_URL.removeprefix("http://")}
    proc = subprocess.run(cmd, cwd=modelfile.parent, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-2000:]}")
    return CreateResult(name, proc.stdout + proc.stderr, clock.seconds)


def ollama_chat(
    name: str, messages: str | Sequence[dict[str, str]], *, options: dict[str, Any] | None = None, timeout: float = 120
) -> str:
    """One chat turn with a model on the local Ollama server (greedy, seed 0 unless ``options`` say otherwise)."""
    if not ollama_available():
        raise _unavailable(name, None)
    from ollama import Client

    msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
    reply = Client(host=OLLAMA_URL, timeout=timeout).chat(
        model=name, messages=msgs, options={"temperature": 0, "seed": 0, **(options or {})}
    )
    return reply["message"]["content"]


def openai_chat(model: str, messages: str | Sequence[dict[str, str]], url: str = OPENAI_URL, *,
                timeout: float = 120) -> str:
    """One chat completion from an OpenAI-compatible server (Ollama's by default), greedy, standard library only.

    The request any OpenAI client sends: ``POST url`` with ``{"model", "messages", "temperature": 0}``; the answer
    is ``choices[0].message.content``. Nothing answering raises ``OllamaUnavailable`` with the same request as a
    ``curl`` command; an error answer (an unknown model: 404) raises ``RuntimeError`` with the server's message.
    """
    msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
    body = json.dumps({"model": model, "messages": msgs, "temperature": 0})
    request = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)["choices"][0]["message"]["content"]
    except urllib.error.HTTPError as err:  # the server answered, with an error (OpenAI's form: {"error": {"message"}})
        detail = err.read().decode(errors="replace")
        try:
            detail = json.loads(detail)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            pass
        raise RuntimeError(f"{url} answered HTTP {err.code}: {detail[:500]}") from err
    except OSError as err:  # URLError too: nothing answers (refused, unreachable, timed out)
        why = getattr(err, "reason", err)
        raise OllamaUnavailable(
            f"no server answers at {url} ({why}): start Ollama (`ollama serve`) and create the model "
            f"(`ollama create {model} -f Modelfile`) first. The same request by hand:\n"
            f"  curl {url} -d {shlex.quote(body)}"
        ) from err
