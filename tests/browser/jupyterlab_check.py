"""Open labs in JupyterLab in headless Chromium, run them as a learner does, and check what is shown.

    python tests/browser/jupyterlab_check.py            # labs 00, 03 and 12, screenshots to outputs/<profile>/
    python tests/browser/jupyterlab_check.py --labs 00  # one lab

JupyterLab starts from this Python environment on a free 127.0.0.1 port with a random token, serving
a fresh copy of each lab (the committed notebooks in labs/ are never opened, so never saved with
outputs). For each lab the browser runs Run > Run All Cells, waits until no cell is queued, saves
the notebook and checks:
  * in the saved notebook, with the runner's own checks: no error output, no stderr line that
    labhelpers/messages.py does not explain, the lab's "Self-check passed" line;
  * on the page: tqdm's progress bars render as widgets (not "Loading widget..." or text); the
    training cell (the one with the trainer's progress bar) shows the live loss plot as an image;
    the self-check line is visible.
Screenshots (the lab's top, its training cell, its self-check cell) and browser_check.json go to
outputs/<profile>/screenshots/. The server is stopped by its own process id whatever happened.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# number: (notebook, trains?)
LABS = {"00": ("00_environment_check", False), "03": ("03_lora_sft", True), "12": ("12_grpo", True)}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Seconds one lab may take from Run All Cells to idle: lab 03 needs about 100 s on 2 idle cores.
TIMEOUT_S = float(os.environ.get("LABS_BROWSER_TIMEOUT", "600"))
INSTALL_HINT = ("install it with `apt-get install chromium` (Debian; scripts/setup.sh does this as root) "
                "or set LABS_CHROMIUM to a Chromium binary")
# JupyterLab user settings for the check: render every cell (not only those in view), never autosave
# (the check saves once, when the run is over), and never fetch news or update notices from the web.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
}


def find_chromium() -> str | None:
    """The Chromium binary: $LABS_CHROMIUM, else chromium / chromium-browser on PATH, else None."""
    wanted = os.environ.get("LABS_CHROMIUM")
    if wanted:
        return wanted if Path(wanted).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def why_unavailable() -> str | None:
    """One line saying what is missing for the browser check and how to install it, or None if all is there."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the browser check needs the `playwright` package: pip install -e '.[test]' (or bash scripts/setup.sh)"
    if find_chromium() is None:
        return f"the browser check needs Chromium, which is not installed: {INSTALL_HINT}"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class JupyterLabServer:
    """``jupyter lab`` from this environment on 127.0.0.1, a free port, a random token; stopped by its pid."""

    def __init__(self, root_dir: Path, work: Path) -> None:
        import secrets

        self.root_dir, self.work = root_dir, work
        self.port, self.token = _free_port(), secrets.token_hex(24)
        self.proc: subprocess.Popen | None = None
        self.runtime: Path | None = None
        self.log = work / "jupyterlab.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        settings = self.work / "settings"
        for name, values in LAB_SETTINGS.items():
            (settings / name).parent.mkdir(parents=True, exist_ok=True)
            (settings / name).write_text(json.dumps(values))
        self.runtime = Path(tempfile.mkdtemp(prefix="jlr-"))  # short: the kernel's IPC socket paths live here
        env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(self.runtime), "HF_HUB_OFFLINE": "1",
               "LABS_PROFILE": os.environ.get("LABS_PROFILE", "smoke")}
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root_dir}",
               f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={self.work / 'workspaces'}",
               "--LabApp.extension_manager=readonly", "--KernelManager.transport=ipc"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root; JupyterLab asks to confirm
            cmd.append("--allow-root")
        with self.log.open("w") as log:  # the server writes to its own copy of the file descriptor
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.root_dir,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"jupyter lab did not answer within {timeout:.0f} s:\n{self.log.read_text()[-2000:]}")

    def shut_down_kernels(self) -> None:
        """End every kernel session through the server's API (one lab's kernel must not stay for the next)."""
        headers = {"Authorization": f"token {self.token}"}
        with urllib.request.urlopen(urllib.request.Request(f"{self.url}/api/sessions", headers=headers)) as reply:
            sessions = json.load(reply)
        for session in sessions:
            request = urllib.request.Request(f"{self.url}/api/sessions/{session['id']}", method="DELETE",
                                             headers=headers)
            urllib.request.urlopen(request).close()

    def stop(self) -> None:
        """SIGTERM to the server's process id (it shuts its kernels down), SIGKILL to what is left after 20 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        import psutil

        print(f"[browser] stopping JupyterLab (pid {self.proc.pid})", flush=True)

        children = psutil.Process(self.proc.pid).children(recursive=True)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for child in children:  # kernels the server did not stop in time, by their own pids
            try:
                child.kill()
            except psutil.Error:
                pass
        if self.runtime is not None:
            shutil.rmtree(self.runtime, ignore_errors=True)


@dataclass
class LabResult:
    """What the check saw for one lab."""

    lab: str
    status: str = "FAILED"
    wall_s: float = 0.0
    self_check: str = ""
    problems: list[str] = field(default_factory=list)
    screenshots: list[str] = field(default_factory=list)


_STATE_JS = """() => {
  const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')]
      .map(p => p.textContent.trim());
  return {total: prompts.length, queued: prompts.filter(p => p.includes('*')).length,
          done: prompts.filter(p => /\\[\\d+\\]/.test(p)).length,
          errors: document.querySelectorAll('.jp-Notebook .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"] .jp-RenderedText pre').length};
}"""  # noqa: E501 - the stderr-output CSS selector, one line of the JS snippet


_KERNEL_IDLE_JS = """() => !document.querySelector('.jp-Dialog') && (
  !!document.querySelector('.jp-Notebook-ExecutionIndicator[data-status="idle"]')
  || /\\|\\s*Idle/.test((document.querySelector('#jp-main-statusbar') || {}).innerText || ''))"""
_STARTED_JS = """() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')]
  .some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))"""


def _accept_kernel_dialog(page) -> None:
    """Answer JupyterLab's "Select Kernel" dialog as a learner does: the offered Python 3 kernel, Select."""
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    if dialog.count():
        dialog.locator("button", has_text="Select").last.click()


def _run_all(page, name: str, tries: int = 3) -> None:
    """Run > Run All Cells once the kernel is idle; again if no cell started (a lost click, a kernel dialog)."""
    for attempt in range(1, tries + 1):
        deadline = time.monotonic() + 300  # on a busy machine the kernel takes a while to start
        while not page.evaluate(_KERNEL_IDLE_JS):
            _accept_kernel_dialog(page)
            if time.monotonic() > deadline:
                raise TimeoutError("the kernel was not idle 300 s after the lab opened")
            time.sleep(1)
        page.wait_for_timeout(1500)  # "Idle" can show a moment before the session is ready to execute
        print(f"[browser] {name}: Run > Run All Cells" + (f" (try {attempt})" if attempt > 1 else ""), flush=True)
        page.locator(".jp-Notebook .jp-Cell").first.click()  # the notebook, not the file browser, has the focus
        _menu(page, "Run", "Run All Cells")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # Run All marks every code cell [*] at once
            _accept_kernel_dialog(page)
            if page.evaluate(_STARTED_JS):
                return
            time.sleep(1)
    raise TimeoutError(f"Run > Run All Cells started no cell in {tries} tries")


def _wait_for_run(page, timeout: float) -> dict:
    """Poll the page until no cell is queued or running for 3 s in a row (done, or stopped at an error)."""
    deadline, settled_since, state = time.monotonic() + timeout, None, {}
    while time.monotonic() < deadline:
        state = page.evaluate(_STATE_JS)
        idle = state["queued"] == 0 and state["done"] > 0
        settled_since = (settled_since or time.monotonic()) if idle else None
        if settled_since and time.monotonic() - settled_since >= 3:
            return state
        time.sleep(0.5)
    raise TimeoutError(f"the lab was still running after {timeout:.0f} s: {state}")


def _menu(page, menu: str, item: str) -> None:
    page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text=menu).first.click()
    page.locator(".lm-Menu-content .lm-Menu-itemLabel").get_by_text(item, exact=True).click()


def check_lab(page, server: JupyterLabServer, name: str, trains: bool, shots: Path, timeout: float) -> LabResult:
    """Open one lab, Run All Cells from the Run menu, save, and check the saved file and the page."""
    import nbformat

    from labhelpers import selfcheck
    from labhelpers.harness.audit import notebook_stderr
    from labhelpers.harness.report import find_self_check

    result, start = LabResult(lab=name), time.monotonic()
    # ?reset: a fresh workspace, so the page shows this lab's tab only.
    page.goto(f"{server.url}/lab/tree/{name}.ipynb?reset&token={server.token}")
    page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=60_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator, .jp-KernelStatus", timeout=60_000)
    _run_all(page, name)
    state = _wait_for_run(page, timeout)
    _menu(page, "File", "Save Notebook")
    page.wait_for_function("() => !document.querySelector('.jp-mod-current.jp-mod-dirty')", timeout=30_000)
    result.wall_s = round(time.monotonic() - start, 1)

    # The saved notebook, with the runner's checks.
    nb = nbformat.read(server.root_dir / f"{name}.ipynb", as_version=4)
    errors = [(i, o) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    for index, out in errors:
        result.problems.append(f"cell {index} raised {out.get('ename')}: {out.get('evalue', '')[:200]}")
    for index, line in notebook_stderr(nb)[:5]:
        result.problems.append(f"cell {index} printed unexplained stderr: {line[:200]}")
    unexecuted = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.get("execution_count") is None]
    if unexecuted and not errors:
        result.problems.append(f"cells {unexecuted[:5]} never ran (page state {state})")
    check = find_self_check(nb)
    result.self_check = check.line if check else ""
    if check is None:
        result.problems.append("no 'Self-check passed' line in the saved notebook")

    # The page, as the learner sees it.
    notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")
    text = notebook.inner_text()
    for broken in ("Loading widget...", "Error displaying widget", "Failed to load model class"):
        if broken in text:
            result.problems.append(f"the page shows {broken!r}: the progress bar did not render as a widget")
    if check is not None and selfcheck.PREFIX not in text:
        result.problems.append("the 'Self-check passed' line is in the file but not on the page")
    page.evaluate("() => document.querySelectorAll('.jp-NotebookPanel *').forEach(e => { e.scrollTop = 0; })")
    page.wait_for_timeout(300)
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=shots / f"{name}-top.png")
    result.screenshots.append(f"{name}-top.png")
    if trains:
        # tqdm.auto's bars (model loading, dataset preparation) must render as ipywidgets; the trainer's own
        # bar is transformers' notebook HTML <progress>, which marks the training cell, where the live plot is.
        if notebook.locator(".widget-hprogress").count() == 0:
            result.problems.append("no progress bar rendered as a widget (.widget-hprogress)")
        training = notebook.locator(".jp-CodeCell", has=page.locator(".jp-OutputArea-output progress"))
        if training.count() == 0:
            result.problems.append("no cell shows the trainer's progress bar (transformers' <progress>)")
        else:
            cell = training.last
            if cell.locator(".jp-OutputArea-output img").count() == 0:
                result.problems.append("the training cell shows no live-plot image")
            cell.screenshot(path=shots / f"{name}-training.png")
            result.screenshots.append(f"{name}-training.png")
    final = notebook.locator(".jp-CodeCell", has_text=selfcheck.PREFIX)
    if final.count():
        final.last.screenshot(path=shots / f"{name}-self-check.png")
        result.screenshots.append(f"{name}-self-check.png")
    result.status = "ok" if not result.problems else "FAILED"
    return result


def run_check(labs: list[str], out_dir: Path, timeout: float | None = None) -> dict:
    """Check the given labs (numbers) in JupyterLab; writes screenshots and browser_check.json to ``out_dir``."""
    from importlib.metadata import version

    from playwright.sync_api import sync_playwright

    timeout = timeout or TIMEOUT_S
    start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="labs-browser-"))
    root = work / "labs"
    root.mkdir()
    for number in labs:  # fresh copies: JupyterLab saves into these, never into labs/
        shutil.copy(ROOT / "labs" / f"{LABS[number][0]}.ipynb", root)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    server = JupyterLabServer(root, work)
    results: list[LabResult] = []
    if threading.current_thread() is threading.main_thread():  # a SIGTERM still stops the server (finally)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        server.start()
        print(f"[browser] JupyterLab {version('jupyterlab')} on {server.url} (pid {server.proc.pid})", flush=True)
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(work / "chromium-profile"), executable_path=find_chromium(), headless=True,
                args=CHROMIUM_FLAGS, viewport={"width": 1280, "height": 900})
            # Nothing but the local server is ever fetched.
            context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(server.url)
                          else route.abort())
            page = context.new_page()
            for number in labs:
                name, trains = LABS[number]
                try:
                    results.append(check_lab(page, server, name, trains, out_dir, timeout))
                except Exception as exc:  # noqa: BLE001 - reported as this lab's failure, the next lab still runs
                    results.append(LabResult(lab=name, problems=[f"{type(exc).__name__}: {str(exc)[:500]}"]))
                    page.screenshot(path=out_dir / f"{name}-at-failure.png")
                server.shut_down_kernels()
            context.close()
    finally:
        server.stop()
        executed = out_dir / "executed"  # the notebooks as JupyterLab saved them, and the server's log
        executed.mkdir(parents=True, exist_ok=True)
        for path in root.glob("*.ipynb"):
            shutil.copy(path, executed)
        if server.log.is_file():
            shutil.copy(server.log, out_dir)
        shutil.rmtree(work, ignore_errors=True)
    summary = {
        "finished": datetime.now().astimezone().isoformat(timespec="seconds"),
        "wall_s": round(time.monotonic() - start, 1),
        "jupyterlab": version("jupyterlab"),
        "browser": subprocess.run([find_chromium(), "--version"], capture_output=True, text=True).stdout.strip(),
        "labs": [r.__dict__ for r in results],
    }
    (out_dir / "browser_check.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labs", nargs="*", default=list(LABS), choices=list(LABS))
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per lab (default %(default)s)")
    args = parser.parse_args(argv)
    missing = why_unavailable()
    if missing:
        print(f"skipped: {missing}")
        return 0
    from labhelpers.profiles import profile

    out_dir = profile(verbose=False).output_dir / "screenshots"
    summary = run_check(args.labs, out_dir, timeout=args.timeout)
    for lab in summary["labs"]:
        print(f"{lab['lab']:<24} {lab['status']:<7} {lab['wall_s']:>6.1f} s  {lab['self_check'][:100]}")
        for problem in lab["problems"]:
            print(f"    {problem}")
    print(f"browser check: {summary['wall_s']} s; screenshots in {out_dir}")
    return 0 if all(lab["status"] == "ok" for lab in summary["labs"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
