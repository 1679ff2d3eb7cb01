"""Headless Chromium driven over the Chrome DevTools Protocol on --remote-debugging-pipe.

No Python package is needed: with that flag Chromium reads NUL-terminated JSON commands from fd 3
and writes replies and events to fd 4. The page is loaded exactly as written (no script is added
to it), its images are inspected with Runtime.evaluate (DevTools evaluation is not subject to the
page's Content-Security-Policy), and console messages, uncaught exceptions and browser log entries
(where policy violations and failed loads are reported) are collected per page.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
)


def chromium_executable() -> str | None:
    """The Chromium on PATH (Debian's package installs `chromium`), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    """One headless browser process; use as a context manager."""

    def __init__(self, exe: str, profile: Path, timeout: float = 60.0) -> None:
        self.timeout, self._id, self._buf = timeout, 0, b""
        self.events: list[dict[str, Any]] = []
        # A file, not a pipe: nobody reads stderr while the browser runs, and a full pipe would block it.
        self.stderr_path = Path(profile) / "chromium-stderr.log"
        to_child, self._cmd = os.pipe()
        self._out, from_child = os.pipe()
        # Above fd 10, so the dup2 onto 3 and 4 in the child can never overwrite one of them.
        fd3, fd4 = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_child, from_child))
        try:
            # close_fds=False: Popen would close fds 3 and 4 after preexec_fn placed them. Nothing
            # else leaks: Python opens every other descriptor non-inheritable (PEP 446). preexec_fn
            # is not thread-safe, which is fine in a single-threaded test process.
            with open(self.stderr_path, "wb") as stderr:
                self.proc = subprocess.Popen(
                    [exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                    preexec_fn=lambda: (os.dup2(fd3, 3), os.dup2(fd4, 4)),
                    close_fds=False,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
        finally:
            for fd in (to_child, from_child, fd3, fd4):
                os.close(fd)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.call("Browser.close")
        except (OSError, EOFError, TimeoutError, RuntimeError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd)
        os.close(self._out)

    def _stderr_tail(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-2000:]

    def _recv(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            ready, _, _ = select.select([self._out], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"Chromium did not answer in time; its stderr:\n{self._stderr_tail()}")
            chunk = os.read(self._out, 1 << 20)
            if not chunk:
                raise EOFError(f"Chromium exited (rc {self.proc.poll()}); its stderr:\n{self._stderr_tail()}")
            self._buf += chunk
        message, self._buf = self._buf.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile are kept in `events`."""
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._cmd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._recv(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def _wait_for(self, method: str, session: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == method and e.get("sessionId") == session for e in self.events):
            self.events.append(self._recv(deadline))

    def open(self, url: str, width: int = 1280, height: int = 2000) -> str:
        """Load `url` in a new tab of the given viewport and wait for its load event; returns the session."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for method in ("Runtime.enable", "Log.enable", "Page.enable"):
            self.call(method, session=session)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        self.call("Page.navigate", {"url": url}, session=session)
        self._wait_for("Page.loadEventFired", session)
        return session

    def evaluate(self, session: str, expression: str) -> Any:
        """The JSON value of `expression` in the page (promises are awaited)."""
        res = self.call(
            "Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True}, session=session
        )
        if "exceptionDetails" in res:
            raise RuntimeError(f"page script failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def errors(self, session: str) -> list[str]:
        """Console errors, uncaught exceptions and error-level log entries of one page so far."""
        out = []
        for e in self.events:
            if e.get("sessionId") != session:
                continue
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append(
                    "console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
                )
            elif method == "Runtime.exceptionThrown":
                out.append("exception: " + params["exceptionDetails"].get("text", ""))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                out.append(f"log ({params['entry'].get('source')}): {params['entry'].get('text', '')}")
        return out

    def screenshot(self, session: str) -> bytes:
        """A PNG of the viewport."""
        return base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"}, session=session)["data"])
