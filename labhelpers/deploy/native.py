"""Native code out of the caller's process: llama.cpp runs in a child, so its crash is an exception here.

llama.cpp is C++ behind ctypes. If it dies (a wheel compiled for another CPU hits an illegal
instruction, a corrupt file trips an assert), it takes the whole process with it: in JupyterLab that
is the kernel ("Kernel died"), in the test suite all of pytest. ``run_isolated`` runs one function in
a fresh child process (``spawn``: no copied threads or locks) and returns its result; if the child
dies of a signal, the parent raises :class:`NativeCrash`, naming the file, the signal and the fix.

    python -m labhelpers.deploy.native --check-build    # what scripts/setup.sh runs after installing

``--check-build`` prints llama.cpp's system info (from a child) and, on x86_64, refuses a build that
uses AVX-512 or AMX, i.e. one compiled for the build machine's own CPU (see scripts/llama_cpp_flags.sh),
unless ``LABS_LLAMA_NATIVE=1`` asked for exactly that.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

TROUBLESHOOTING = "docs/TROUBLESHOOTING.md, 'Kernel died / segmentation fault in llama.cpp'"
# Instruction sets a portable x86_64 build must not use (scripts/llama_cpp_flags.sh builds the AVX2 level).
NON_PORTABLE_X86 = ("AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16", "AMX_INT8")


class NativeCrash(RuntimeError):
    """A child process running native code (llama.cpp) died of a signal; the caller's process is intact."""

    def __init__(self, what: str, path: str | Path | None, exitcode: int):
        self.what, self.path, self.exitcode = what, None if path is None else Path(path), exitcode
        self.signal = signal.Signals(-exitcode).name if exitcode < 0 else None
        how = f"was killed by {self.signal}" if self.signal else f"exited with code {exitcode} without an answer"
        on = f" on {self.path}" if self.path is not None else ""
        hint = (
            "Most often llama-cpp-python was compiled for another CPU (a wheel built with -march=native): "
            "rebuild it portable with `rm .venv/.labs-installed && bash scripts/setup.sh`, then check "
            "`python -m labhelpers.deploy.native --check-build`. If it persists, the file may be damaged: "
            f"export it again. See {TROUBLESHOOTING}."
        )
        super().__init__(f"llama.cpp ({what}){on} {how}; this process is unharmed. {hint}")


class _ChildError(RuntimeError):
    """An exception raised in the child that could not be sent back as itself."""


def _child(conn: Any, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    try:
        result = (True, fn(*args, **kwargs))
    except BaseException as err:  # noqa: BLE001 - every error goes back to the parent
        result = (False, err, traceback.format_exc())
    try:
        conn.send(result)
    except Exception:  # noqa: BLE001 - an unpicklable exception or result
        conn.send((False, _ChildError(repr(result[1])), result[-1]))
    finally:
        conn.close()


def run_isolated(fn: Callable[..., Any], *args: Any, what: str, path: str | Path | None = None,
                 timeout: float | None = None, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a fresh child process; its return value, or its exception re-raised here.

    ``fn`` must be importable by name (a module-level function). A child that dies of a signal raises
    :class:`NativeCrash` naming ``what`` and ``path``; one still running after ``timeout`` seconds is
    killed and raises ``TimeoutError``.
    """
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, fn, args, kwargs), daemon=True)
    proc.start()
    send.close()
    message = None
    try:
        if receive.poll(timeout):
            message = receive.recv()
        elif proc.is_alive():
            proc.kill()
            proc.join()
            raise TimeoutError(f"llama.cpp ({what}) on {path} did not finish within {timeout} s; it was stopped.")
    except EOFError:  # the child died before it could answer
        message = None
    finally:
        receive.close()
        proc.join()
    if message is None:
        raise NativeCrash(what, path, proc.exitcode if proc.exitcode is not None else -1)
    if message[0]:
        return message[1]
    err = message[1]
    err.__cause__ = _ChildError(f"in the child process:\n{message[2]}")
    raise err


def _system_info() -> str:
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode(errors="replace")


def system_info() -> str:
    """llama.cpp's own ``llama_print_system_info()`` (the instruction sets it was compiled with), read in a child."""
    return run_isolated(_system_info, what="system info")


def non_portable_features(info: str, machine: str | None = None) -> list[str]:
    """The instruction sets in ``info`` that a portable build for ``machine`` (default: this one) must not use."""
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64"):
        return []
    enabled = {part.split("=")[0].strip() for part in info.split("|") if part.strip().endswith("= 1")}
    return [name for name in NON_PORTABLE_X86 if name in enabled]


def check_build() -> int:
    """Print llama.cpp's system info; exit status 1 if the build is not portable and native was not asked for."""
    info = system_info().strip()
    print(f"[setup] llama.cpp system info: {info}")
    extra = non_portable_features(info)
    if extra and os.environ.get("LABS_LLAMA_NATIVE", "0") != "1":
        print(f"[setup] ERROR: this llama-cpp-python uses {', '.join(extra)}: it was compiled for the build "
              "machine's own CPU and crashes on others. Rebuild it portable: "
              "`rm .venv/.labs-installed && bash scripts/setup.sh`.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["--check-build"]:
        raise SystemExit("usage: python -m labhelpers.deploy.native --check-build")
    raise SystemExit(check_build())
