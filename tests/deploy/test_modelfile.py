"""labhelpers.deploy.ollama: the Modelfile rebuilds the training chat format; Ollama is called or skipped clearly."""

from __future__ import annotations

import http.server
import json
import re
import socket
import subprocess
import threading
import types

import pytest

from labhelpers import deploy as ex
from labhelpers.deploy import ollama as ol


def test_modelfile_for_the_embedded_model(art):
    info = ex.write_modelfile(art.q4, art.merged)
    text = info.path.read_text()
    assert info.path == art.q4.parent / "Modelfile" and text == info.text
    assert "FROM ./m-Q4_K_M.gguf" in text
    assert info.template_source == "derived"
    assert info.stop == ["<|im_end|>"] and 'PARAMETER stop "<|im_end|>"' in text
    assert "PARAMETER temperature 0.7" in text
    # The template's default system prompt is carried over as SYSTEM, taken from the template itself.
    user_only = art.tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    assert info.system and info.system in user_only
    written = re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M).group(1)
    assert written == info.template and "{{ .Prompt }}" in written and "{{ .Response }}" in written


@pytest.mark.parametrize("chat", [
    [{"role": "system", "content": "You answer in French."}, {"role": "user", "content": "Hello there"}],
    [{"role": "user", "content": "Hello there"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}],
])
def test_modelfile_template_reproduces_the_hf_chat_template(art, chat, tmp_path):
    """The TEMPLATE as written in the Modelfile, rendered as Ollama renders it, is the HF chat template's prompt."""
    info = ex.write_modelfile(art.q4, art.merged, path=tmp_path / "Modelfile")
    written = re.search(r'^TEMPLATE """(.*?)"""$', info.text, re.S | re.M).group(1)
    hf = art.tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert ex.render_ollama_prompt(written, chat, info.system) == hf


def test_modelfile_system_argument_overrides_the_default(art, tmp_path):
    info = ex.write_modelfile(art.q4, art.tok, system="You are a terse assistant.", params={"num_ctx": 2048},
                              path=tmp_path / "Modelfile")
    assert 'SYSTEM """You are a terse assistant."""' in info.text and "PARAMETER num_ctx 2048" in info.text
    assert f"FROM {art.q4.resolve()}" in info.text  # another folder: absolute path


def _fake_tokenizer(template: str):
    """A tokenizer stand-in whose chat template is ``template`` (a made-up format, not a real family's)."""
    from jinja2 import Template

    fake = types.SimpleNamespace(bos_token=None, eos_token=None, chat_template="x", all_special_tokens=[])
    fake.apply_chat_template = lambda msgs, tokenize=False, add_generation_prompt=False: Template(template).render(
        messages=msgs, add_generation_prompt=add_generation_prompt)
    return fake


def test_a_block_written_into_every_chat_becomes_a_messages_template(art):
    """A per-turn TEMPLATE cannot write a block that stands in every chat (Llama 3.1's dated system header)."""
    always_system = ("{{ '<sys>dated header\n' }}{% for m in messages %}"
                     "{% if m['role'] == 'system' %}{{ m['content'] }}"
                     "{% else %}{{ '<' + m['role'] + '>' + m['content'] + '</>' }}{% endif %}{% endfor %}"
                     "{% if add_generation_prompt %}{{ '<assistant>' }}{% endif %}")
    fake = _fake_tokenizer(always_system)
    result = ol.ollama_template(fake)
    assert result.template and "range .Messages" in result.template and result.template.startswith("<sys>dated header")
    for chat in ol._CHECK_CHATS:
        assert ex.render_ollama_prompt(result.template, chat, result.system) == fake.apply_chat_template(
            chat, add_generation_prompt=True)


def test_template_that_ollama_cannot_express_is_deferred(art):
    numbered = ("{% for m in messages %}{{ '[' ~ loop.index ~ '] ' + m['role'] + ': ' + m['content'] + '\n' }}"
                "{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")  # turns counted
    result = ol.ollama_template(_fake_tokenizer(numbered))
    assert result.template is None and "as a .Messages template" in result.reason

def test_no_ollama_binary_gives_the_commands_to_run_on_the_spark(art, monkeypatch):
    monkeypatch.setattr(ol.shutil, "which", lambda name: None)
    modelfile = ex.write_modelfile(art.q4, art.tok).path
    assert ex.ollama_available() is False
    with pytest.raises(ex.OllamaUnavailable, match="no `ollama` binary on PATH") as err:
        ex.ollama_create("lab10-test", modelfile)
    msg = str(err.value)
    assert f"cd {modelfile.parent}" in msg and "ollama create lab10-test -f Modelfile" in msg
    assert 'ollama run lab10-test "' in msg
    with pytest.raises(ex.OllamaUnavailable):
        ex.ollama_chat("lab10-test", "Hello")


def test_silent_server_is_unavailable_and_the_message_says_start_it(monkeypatch, tmp_path):
    import urllib.error

    monkeypatch.setattr(ol.shutil, "which", lambda name: "/usr/local/bin/ollama")

    def refuse(url, timeout):
        assert url.startswith("http://127.0.0.1:11434/"), url  # never any other host
        raise urllib.error.URLError("connection refused")

    monkeypatch.setattr(ol.urllib.request, "urlopen", refuse)
    assert ex.ollama_available() is False
    (tmp_path / "Modelfile").write_text("FROM ./x.gguf\n")
    with pytest.raises(ex.OllamaUnavailable, match=r"(?s)not answering on 127\.0\.0\.1:11434.*ollama serve"):
        ex.ollama_create("lab10-test", tmp_path / "Modelfile")


def test_ollama_create_returns_ollamas_output_and_its_wall_time(tmp_path, monkeypatch):
    (tmp_path / "Modelfile").write_text("FROM ./x.gguf\n")
    monkeypatch.setattr(ol, "ollama_available", lambda timeout=1.0: True)
    monkeypatch.setattr(ol.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 0, "success\n", ""))
    created = ex.ollama_create("lab10-test", tmp_path / "Modelfile")
    assert (created.name, created.output, str(created)) == ("lab10-test", "success\n", "success\n")
    assert 0 <= created.seconds < 5


@pytest.fixture
def openai_server():
    """A stand-in for Ollama's /v1/chat/completions on a free local port (http.server in a thread): its URL and
    the requests it received. It answers model "missing" as Ollama does, with a 404 and an error message."""
    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append({"path": self.path, "type": self.headers["Content-Type"], "body": body})
            if body["model"] == "missing":
                status, reply = 404, {"error": {"message": 'model "missing" not found, try pulling it first'}}
            else:
                status, reply = 200, {"choices": [{"message": {"role": "assistant", "content": "Lab 3.1.6."}}]}
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):  # no request log on stderr
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions", received
    server.shutdown()
    server.server_close()
    thread.join()


def test_openai_chat_sends_an_openai_chat_request_and_returns_the_answer(openai_server):
    url, received = openai_server
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Which lab covers DPO?"}]
    assert ex.openai_chat("spark-lab10-smoke", messages, url=url) == "Lab 3.1.6."
    assert ex.openai_chat("spark-lab10-smoke", "Hi", url=url) == "Lab 3.1.6."
    first, second = received
    assert first == {"path": "/v1/chat/completions", "type": "application/json",
                     "body": {"model": "spark-lab10-smoke", "messages": messages, "temperature": 0}}
    assert second["body"]["messages"] == [{"role": "user", "content": "Hi"}]


def test_openai_chat_reports_an_error_answer_with_the_servers_message(openai_server):
    url, _ = openai_server
    with pytest.raises(RuntimeError, match=r'answered HTTP 404: model "missing" not found, try pulling it first$'):
        ex.openai_chat("missing", "Hi", url=url)


def test_openai_chat_without_a_server_is_unavailable_and_gives_the_request_by_hand():
    with socket.socket() as sock:  # a port nothing listens on: bound, then closed
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/chat/completions"
    with pytest.raises(ex.OllamaUnavailable, match=r"no server answers at http://127\.0\.0\.1:\d+/v1/chat/") as err:
        ex.openai_chat("spark-lab10-smoke", "What's new?", url=url, timeout=5)
    msg = str(err.value)
    assert "ollama serve" in msg and "ollama create spark-lab10-smoke -f Modelfile" in msg
    assert f"curl {url} -d " in msg and "What'\"'\"'s new?" in msg  # the body quoted for a shell


def test_ollama_create_rejects_a_bad_model_name(tmp_path):
    with pytest.raises(ValueError, match="name='my model'"):
        ex.ollama_create("my model", tmp_path / "Modelfile")
