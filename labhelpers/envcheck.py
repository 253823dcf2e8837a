"""The checks of lab 00: is this machine ready for the labs? Each check measures; none assumes.

Every function returns a :class:`Check` (name, ok, detail, required); ``run_checks()`` runs them all.
Nothing here prints or stores a Hugging Face token: only whether one is configured.
"""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "datasets", "accelerate")


@dataclass
class Check:
    """One line of the environment report."""

    name: str
    ok: bool
    detail: str
    required: bool = True
    before: float | None = None  # a check that measures a change (bitsandbytes: bytes before -> after 4-bit)
    after: float | None = None

    def __str__(self) -> str:
        mark = "OK  " if self.ok else ("FAIL" if self.required else "note")
        return f"[{mark}] {self.name:<22} {self.detail}"


def versions() -> dict[str, str]:
    """Python, platform and the installed versions of the packages the labs use."""
    out = {"python": platform.python_version(), "machine": platform.machine()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "missing"
    import torch

    out["cuda (torch build)"] = str(torch.version.cuda)
    return out


def check_packages() -> Check:
    """Every package the labs import is installed."""
    missing = [k for k, v in versions().items() if v == "missing"]
    return Check("packages", not missing, "all installed" if not missing else f"missing: {', '.join(missing)}")


def check_device() -> Check:
    """The accelerator: name, compute capability and memory; a CPU-only machine is fine for smoke runs."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return Check(
            "device",
            True,
            f"{props.name}, compute capability {props.major}.{props.minor}, {props.total_memory / 1e9:.1f} GB",
        )
    return Check("device", True, "no CUDA GPU: CPU only (fine for LABS_PROFILE=smoke; a Spark shows its GB10)", False)


def check_disk(path: str | Path | None = None, recommended_gb: float | None = None) -> Check:
    """Free disk where models are cached, against the full profile's disk plan (a note, not a failure).

    ``recommended_gb`` defaults to ``labhelpers.disk.plan_disk().total``, the total lab 00 and
    docs/LAB_PREP.md print, rounded up to a whole GB.
    """
    if recommended_gb is None:
        import math

        from labhelpers.disk import plan_disk

        recommended_gb = math.ceil(plan_disk().total / 1e9)
    if path is None:
        from huggingface_hub import constants

        path = Path(constants.HF_HOME)
        while not path.exists():  # the cache folder may not exist yet: measure the disk it will be on
            path = path.parent
    free_gb = shutil.disk_usage(Path(path).expanduser()).free / 1e9
    ok = free_gb >= recommended_gb
    return Check(
        "disk",
        ok,
        f"{free_gb:.0f} GB free at {path} (the full profile's disk plan: {recommended_gb} GB; lh.plan_disk())",
        required=False,
    )


def check_bitsandbytes() -> Check:
    """bitsandbytes really quantizes: NF4 round trip of a tensor (an import alone proves nothing on aarch64)."""
    try:
        import bitsandbytes.functional as bnbf
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        x = torch.randn(4096, device=device, dtype=torch.float32, generator=None)
        q, state = bnbf.quantize_4bit(x, quant_type="nf4", blocksize=64)
        back = bnbf.dequantize_4bit(q, state, quant_type="nf4", blocksize=64)
        rel = float((back - x).norm() / x.norm())
        bytes_q = q.numel() * q.element_size()
    except Exception as exc:  # noqa: BLE001 - any failure here is the finding
        return Check("bitsandbytes 4-bit", False, f"NF4 quantization failed: {type(exc).__name__}: {exc}")
    ok = rel < 0.15 and bytes_q <= x.numel() // 2
    return Check(
        "bitsandbytes 4-bit",
        ok,
        f"NF4 on {device}: {x.numel() * 4} -> {bytes_q} bytes, relative error {rel:.3f}",
        before=float(x.numel() * 4),
        after=float(bytes_q),
    )


def check_hf_token() -> Check:
    """Whether a Hugging Face token is configured (needed for gated Llama models). Never shows it."""
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token:
        try:
            from huggingface_hub import get_token

            token = get_token()
        except Exception:  # noqa: BLE001
            token = None
    detail = (
        "configured (value not shown)"
        if token
        else "not configured: run `hf auth login` in a terminal before the full profile (Llama is gated)"
    )
    return Check("Hugging Face token", bool(token), detail, required=False)


def check_ollama() -> Check:
    """Whether the ``ollama`` CLI is installed and its local server answers (needed in lab 10 only)."""
    from labhelpers.deploy import ollama_available

    path = shutil.which("ollama")
    if path is None:
        return Check("ollama", False, "not installed: lab 10 skips the Ollama steps (see docs/LAB_PREP.md)", False)
    up = ollama_available()
    return Check("ollama", up, f"{path}; server {'answering' if up else 'not answering: run `ollama serve`'}", False)


def run_checks() -> list[Check]:
    """All checks, in the order lab 00 shows them."""
    return [check_packages(), check_device(), check_disk(), check_bitsandbytes(), check_hf_token(), check_ollama()]
