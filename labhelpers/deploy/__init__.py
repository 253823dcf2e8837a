"""Deployment (lab 10), in the order it runs: merge the adapter (``merge``), convert and quantize to GGUF
(``gguf``), check the GGUF against the Hugging Face model (``verify``), write the Modelfile and serve it with
Ollama (``ollama``, whose chat template is rendered by ``gotemplate``); llama.cpp runs in a child process
(``native``) so that its crash never kills the kernel.

Lab 10 calls these as ``lh.deploy.<name>``; each step returns what it measured, its wall time included
(``.seconds``), so the lab prints times from results, not from a stopwatch of its own. A step that writes a file
or folder returns a ``TimedPath`` (``merge.TimedPath``, shared by every step), which passes on wherever a path is taken.
"""

from labhelpers.deploy.gguf import ConverterUnsupported, export_gguf, gguf_summary, quantize_gguf, read_gguf_header
from labhelpers.deploy.merge import TimedPath, adapter_base, merge_adapter
from labhelpers.deploy.ollama import (
                                      OllamaUnavailable,
                                      ollama_available,
                                      ollama_chat,
                                      ollama_create,
                                      openai_chat,
                                      render_ollama_prompt,
                                      write_modelfile,
)
from labhelpers.deploy.verify import verify_gguf

__all__ = ["ConverterUnsupported", "OllamaUnavailable", "TimedPath", "adapter_base", "export_gguf", "gguf_summary",
           "merge_adapter", "ollama_available", "ollama_chat", "ollama_create", "openai_chat", "quantize_gguf",
           "read_gguf_header", "render_ollama_prompt", "verify_gguf", "write_modelfile"]
