"""``render_ollama_prompt`` builds prompts the way Ollama does: its golden renderings, Go template semantics.

The golden data in tests/fixtures/ollama/ is vendored, byte for byte, from ollama/ollama (see its README.md).
No model, no server: every test here is plain text in, text out.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from labhelpers.deploy.gotemplate import parse
from labhelpers.deploy.ollama import render_ollama_prompt

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ollama"
TEMPLATES = sorted(path.stem for path in FIXTURES.glob("*.gotmpl"))

# The three chats of Ollama's TestTemplate (template/template_test.go), keyed by their roles joined by "-",
# the names of the expected-output files in testdata/<template>.gotmpl/.
_HELLO = {"role": "user", "content": "Hello, how are you?"}
_GREAT = {"role": "assistant", "content": "I'm doing great. How can I help you today?"}
_SHOW = {"role": "user", "content": "I'd like to show off how chat templating works!"}
OLLAMA_CHATS = {
    "user": [_HELLO],
    "user-assistant-user": [_HELLO, _GREAT, _SHOW],
    "system-user-assistant-user": [{"role": "system", "content": "You are a helpful assistant."}, _HELLO, _GREAT,
                                   _SHOW],
}
# TestTemplate drops one trailing space from these templates' output before comparing.
TRAILING_SPACE_TRIMMED = {"chatqa", "llama2-chat", "mistral-instruct", "openchat", "vicuna"}

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"}]


def run(template: str, **data) -> str:
    return parse(template).execute(data)


# ------------------------------------------------------------------------------------ Ollama's golden data
def test_the_vendored_templates_cover_every_template_in_ollamas_library():
    assert len(TEMPLATES) == 20 and {"llama3-instruct", "chatml", "zephyr", "gemma3-instruct"} <= set(TEMPLATES)
    assert sorted(p.name for p in (FIXTURES / "testdata").iterdir()) == [f"{name}.gotmpl" for name in TEMPLATES]


@pytest.mark.parametrize("chat", sorted(OLLAMA_CHATS))
@pytest.mark.parametrize("name", TEMPLATES)
def test_ollama_library_template_renders_byte_for_byte_like_ollamas_golden_file(name, chat):
    template = (FIXTURES / f"{name}.gotmpl").read_bytes().decode()
    rendered = render_ollama_prompt(template, OLLAMA_CHATS[chat]).encode()
    if name in TRAILING_SPACE_TRIMMED and rendered.endswith(b" "):
        rendered = rendered[:-1]
    assert rendered == (FIXTURES / "testdata" / f"{name}.gotmpl" / chat).read_bytes()


_INST = "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}"
_FRIEND = [{"role": "user", "content": "Hello friend!"}, {"role": "assistant", "content": "Hello human!"},
           {"role": "user", "content": "What is your name?"}]


# Cases of Ollama's TestExecuteWithMessages (template/template_test.go): legacy templates, with and without
# {{ .Response }}, and .Messages templates must give the same prompt.
@pytest.mark.parametrize("template, chat, expected", [
    (_INST + "{{ .Prompt }}[/INST] ", _FRIEND,
     "[INST] Hello friend![/INST] Hello human![INST] What is your name?[/INST] "),
    (_INST + "{{ .Prompt }}[/INST] {{ .Response }}", _FRIEND,
     "[INST] Hello friend![/INST] Hello human![INST] What is your name?[/INST] "),
    (_INST + '\n{{- range .Messages }}\n{{- if eq .Role "user" }}{{ .Content }}[/INST] {{ else if eq .Role '
     '"assistant" }}{{ .Content }}[INST] {{ end }}\n{{- end }}', _FRIEND,
     "[INST] Hello friend![/INST] Hello human![INST] What is your name?[/INST] "),
    (_INST + "{{ .Prompt }}[/INST] ", [{"role": "system", "content": "You are a helpful assistant!"}, *_FRIEND],
     "[INST] You are a helpful assistant!\n\nHello friend![/INST] Hello human![INST] What is your name?[/INST] "),
    ("[INST] {{ .Prompt }}[/INST] {{ .Response }}",
     [*_FRIEND, {"role": "assistant", "content": "My name is Ollama and I"}],
     "[INST] Hello friend![/INST] Hello human![INST] What is your name?[/INST] My name is Ollama and I"),
    ('\n{{- range $i, $m := .Messages }}\n{{- if eq .Role "user" }}[INST] {{ .Content }}[/INST] {{ else if eq '
     '.Role "assistant" }}{{ .Content }}{{ end }}\n{{- end }}',
     [*_FRIEND, {"role": "assistant", "content": "My name is Ollama and I"}],
     "[INST] Hello friend![/INST] Hello human![INST] What is your name?[/INST] My name is Ollama and I"),
    ("{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ if .Prompt }}<|im_start|>user\n"
     "{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ .Response }}<|im_end|>\n",
     [{"role": "system", "content": "You are a helpful assistant!"}, *_FRIEND],
     "<|im_start|>system\nYou are a helpful assistant!<|im_end|>\n<|im_start|>user\nHello friend!<|im_end|>\n"
     "<|im_start|>assistant\nHello human!<|im_end|>\n<|im_start|>user\nWhat is your name?<|im_end|>\n"
     "<|im_start|>assistant\n"),
])  # fmt: skip
def test_legacy_and_messages_templates_render_like_ollamas_execute_tests(template, chat, expected):
    assert render_ollama_prompt(template, chat) == expected


# ------------------------------------------------------------------------------------ Ollama's rules
def test_legacy_template_runs_once_per_turn_and_stops_after_the_last_response():
    template = "{{ if .System }}<s>{{ .System }}</s>{{ end }}<u>{{ .Prompt }}</u><a>{{ .Response }}</a>"
    assert render_ollama_prompt(template, CHAT) == "<s>Be brief.</s><u>Hi</u><a>Hello!</a><u>2+2?</u><a>"


def test_legacy_template_without_response_gets_one_appended():
    assert render_ollama_prompt("{{ .Prompt }}|", CHAT[1:]) == "Hi|Hello!2+2?|"


def test_legacy_response_inside_an_if_with_an_else_fails_as_in_ollama():
    with pytest.raises(ValueError, match=r"\.Response.*else.*Go panic"):
        render_ollama_prompt("{{ if .Prompt }}{{ .Prompt }}{{ .Response }}{{ else }}-{{ end }}", CHAT[1:2])


def test_modelfile_system_is_prepended_only_when_the_chat_does_not_start_with_a_system_message():
    template, user = "{{ range .Messages }}{{ .Role }}:{{ .Content }} {{ end }}", [CHAT[1]]
    assert render_ollama_prompt(template, user, system="S") == "system:S user:Hi "
    assert render_ollama_prompt(template, CHAT[:2], system="S") == "system:Be brief. user:Hi "
    late = [*user, {"role": "system", "content": "Late"}]
    assert render_ollama_prompt(template, late, system="S") == "system:S user:Hi system:Late "
    assert render_ollama_prompt("{{ .System }}|{{ .Prompt }}", user, system="S") == "S|Hi"  # legacy


def test_consecutive_same_role_messages_are_merged_but_tool_messages_are_not():
    chat = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "tool", "content": "x"},
            {"role": "tool", "content": "y"}]
    assert render_ollama_prompt("{{ range .Messages }}[{{ .Role }}:{{ .Content }}]{{ end }}", chat) == (
        "[user:a\n\nb][tool:x][tool:y]")


def test_messages_template_sees_every_system_message_joined_as_dollar_system():
    chat = [{"role": "system", "content": "A"}, CHAT[1], {"role": "system", "content": "B"}, CHAT[3]]
    template = '{{ range .Messages }}{{ if eq .Role "user" }}{{ $.System }}/{{ .Content }} {{ end }}{{ end }}'
    assert render_ollama_prompt(template, chat) == "A\n\nB/Hi A\n\nB/2+2? "


# ------------------------------------------------------------------------------------ Go template semantics
def test_trim_markers_remove_all_whitespace_on_their_side_only():
    assert run("a \n\t {{- .X -}} \n b", X="1") == "a1b"
    assert run("a {{- .X }} b|a {{ .X -}} b", X="1") == "a1 b|a 1b"
    assert run("{{23 -}} < {{- 45}}") == "23<45"  # the example of Go's documentation
    assert run("{{-3}}") == "-3"  # without a space after it, '-' is a number's sign


def test_else_if_chain_takes_the_first_true_branch():
    template = '{{ if eq .R "a" }}A{{ else if eq .R "b" }}B{{ else if .R }}other{{ else }}none{{ end }}'
    assert [run(template, R=r) for r in ("a", "b", "c", "")] == ["A", "B", "other", "none"]


def test_range_declares_index_and_element_variables():
    template = "{{ range $i, $m := .Messages }}{{ $i }}:{{ $m.Role }}={{ .Content }};{{ end }}"
    assert render_ollama_prompt(template, CHAT) == "0:system=Be brief.;1:user=Hi;2:assistant=Hello!;3:user=2+2?;"
    assert render_ollama_prompt("{{ range $m := .Messages }}{{ $m.Role }} {{ end }}", CHAT) == (
        "system user assistant user ")


def test_range_else_break_and_continue():
    template = ('{{ range .Messages }}{{ if eq .Role "system" }}{{ continue }}{{ end }}'
                '{{ if eq .Role "assistant" }}{{ break }}{{ end }}[{{ .Content }}]{{ else }}empty{{ end }}')
    assert render_ollama_prompt(template, CHAT) == "[Hi]"
    assert render_ollama_prompt(template, []) == "empty"
    assert run("{{ range $k, $v := .M }}{{ $k }}={{ $v }} {{ end }}", M={"b": 2, "a": 1}) == "a=1 b=2 "


def test_variables_are_assigned_in_their_scope_and_end_with_it():
    assert run('{{ $x := "a" }}{{ if true }}{{ $x = "b" }}{{ $y := 1 }}{{ end }}{{ $x }}') == "b"
    with pytest.raises(ValueError, match=r"undefined variable \$y"):
        parse("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}")
    assert run("{{ with .S }}<{{ . }}>{{ end }}{{ with .Nope }}x{{ else }}none{{ end }}", S="s") == "<s>none"


def test_eq_with_several_arguments_is_true_when_any_matches():
    template = '{{ range .Messages }}{{ if eq .Role "user" "system" }}{{ .Content }},{{ end }}{{ end }}'
    assert render_ollama_prompt(template, CHAT) == "Be brief.,Hi,2+2?,"
    assert run('{{ eq 1 2 3 1 }} {{ ne "a" "b" }} {{ lt 1 2 }} {{ ge "b" "a" }} {{ le 2 2 }} {{ gt 1 2 }}') == (
        "true true true true true false")
    with pytest.raises(ValueError, match="incompatible types for comparison"):
        run('{{ eq "1" 1 }}')


def test_and_or_not_return_go_values_and_short_circuit():
    assert run('{{ or .Nope "default" }} {{ and "a" "b" }} {{ not .Nope }} {{ or "x" (len 5) }}') == (
        "default b true x")


def test_len_slice_and_index():
    template = ("{{ len .Messages }} {{ (index .Messages 1).Content }} {{ len (slice .Messages 2) }} "
                "{{ (index (slice .Messages 1 3) 1).Role }} {{ len (slice $.Messages 1 1) }}")
    assert render_ollama_prompt(template, CHAT) == "4 Hi 2 assistant 0"
    assert run('{{ slice "hello" 1 3 }} {{ len "héllo" }} {{ index "abc" 1 }} {{ index .M "k" }}', M={"k": "v"}) == (
        "el 6 98 v")  # strings are bytes to Go: len counts bytes, index gives a byte
    with pytest.raises(ValueError, match="index 4 is out of range"):
        render_ollama_prompt("{{ index .Messages 4 }}", CHAT)


def test_comments_render_nothing_and_can_trim():
    assert run("a{{/* one\ntwo */}}b|a {{/* c */}} b|a \n{{- /* c */ -}}\n b") == "ab|a  b|ab"


def test_string_literals_take_go_escapes_and_raw_strings_do_not():
    assert run(r'{{ printf "%s\n\t%d %v%%" "a" 3 true }}|{{ "\u00e9\x41\101" }}|{{ `a\nb` }}') == (
        "a\n\t3 true%|éAA|a\\nb")


def test_missing_keys_are_nil_false_and_print_no_value_as_in_go():
    # Ollama's data is a map[string]any: missingkey=zero gives any's zero value, nil, which Go prints "<no value>".
    template = "{{ range .Messages }}{{ end }}[{{ .Prompt }}]{{ if .Prompt }}yes{{ else }}no{{ end }}"
    assert render_ollama_prompt(template, CHAT) == "[<no value>]no"
    assert run("{{ $v := .Nope }}{{ $v.Deeper }}") == "<no value>"
    with pytest.raises(ValueError, match=r"nil pointer evaluating interface \{\}\.Deeper"):
        run("{{ .Nope.Deeper }}")
    with pytest.raises(ValueError, match="can't evaluate field Nope"):  # a message is a struct, not a map
        render_ollama_prompt("{{ range .Messages }}{{ .Nope }}{{ end }}", CHAT)


@pytest.mark.parametrize("template, construct", [
    ('{{ template "x" }}', "{{ template }}"),
    ('{{ define "x" }}x{{ end }}', "{{ define }}"),
    ('{{ .System | printf "%s" }}', "'|' pipelines"),
    ("{{ html .System }}", "function 'html'"),
    ("{{ 1.5 }}", "number literal '1.5'"),
    ("{{ 'a' }}", "character constant"),
    ("{{ if .System }}x{{ else with .Prompt }}y{{ end }}", "{{ else with }}"),
    ("{{ range .Messages }}{{ json .Content }}{{ end }}", "Ollama's template function 'json'"),
    ('{{ range .Messages }}{{ printf "%q" .Content }}{{ end }}', "printf: '%q'"),
    ("{{ range .Messages }}{{ . }}{{ end }}", "printing a *template.templateMessage value"),
    ("{{ range .Messages }}{{ .Content }}", "missing {{ end }}"),
])  # fmt: skip
def test_unsupported_or_invalid_construct_raises_value_error_naming_it(template, construct):
    with pytest.raises(ValueError) as err:
        render_ollama_prompt(template, CHAT)
    assert construct in str(err.value)
