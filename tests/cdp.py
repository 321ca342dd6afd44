"""A minimal Chrome DevTools Protocol driver over ``--remote-debugging-pipe`` (fd 3 in, fd 4 out,
NUL-separated JSON): enough to sign in, click, screenshot, download and collect console messages
with Debian's headless Chromium, without Playwright, Selenium or a websocket library."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    return None


class Browser:
    def __init__(self, exe: str, profile: Path) -> None:
        cmd_r, self._cmd_w = os.pipe()
        self._ev_r, ev_w = os.pipe()

        def fds() -> None:
            os.dup2(cmd_r, 3)
            os.dup2(ev_w, 4)

        self.proc = subprocess.Popen([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                                      "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", "--remote-debugging-pipe",
                                      "--window-size=1200,900", "about:blank"], preexec_fn=fds, close_fds=False,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(ev_w)
        self._id = 0
        self._results: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)
        # out-of-process frames (the sandboxed report frame) get their own sessions
        self.call("Target.setAutoAttach", session=True, autoAttach=True, waitForDebuggerOnStart=False, flatten=True)

    def frame_session(self, *, after: int, timeout: float = 30) -> str:
        """The session of the next iframe target attached after event ``after`` (Runtime and Log
        enabled there, so its console messages are collected too)."""
        e = self.wait_event("Target.attachedToTarget", after=after, timeout=timeout, where=lambda e: e["params"]["targetInfo"]["type"] == "iframe")
        sid: str = e["params"]["sessionId"]
        for domain in ("Runtime", "Log"):
            self.call(f"{domain}.enable", session=sid)
        return sid

    def _read(self) -> None:
        buf = b""
        while True:
            chunk = os.read(self._ev_r, 1 << 16)
            if not chunk:
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                with self._cv:
                    if "id" in msg:
                        self._results[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                    self._cv.notify_all()

    def call(self, method: str, *, session: bool | str = False, timeout: float = 30, **params: Any) -> dict[str, Any]:
        """Send ``method``: to the browser, the page (``session=True``) or another session id."""
        self._id += 1
        i = self._id
        msg: dict[str, Any] = {"id": i, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session if session is True else session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        with self._cv:
            if not self._cv.wait_for(lambda: i in self._results, timeout=timeout):
                raise TimeoutError(method)
            res = self._results.pop(i)
        if "error" in res:
            raise RuntimeError(f"{method}: {res['error']}")
        out: dict[str, Any] = res.get("result", {})
        return out

    def wait_event(self, method: str, *, after: int, timeout: float = 30, where: Any = None) -> dict[str, Any]:
        with self._cv:
            ok = self._cv.wait_for(lambda: any(e["method"] == method and (where is None or where(e)) for e in self.events[after:]), timeout=timeout)
            if not ok:
                raise TimeoutError(method)
            return next(e for e in self.events[after:] if e["method"] == method and (where is None or where(e)))

    def load(self, action: Any) -> None:
        """Run ``action`` (a navigation or a click) and wait for the page's load event."""
        n = len(self.events)
        action()
        self.wait_event("Page.loadEventFired", after=n)

    def goto(self, url: str) -> None:
        self.load(lambda: self.call("Page.navigate", session=True, url=url))

    def js(self, expr: str, *, session: bool | str = True) -> Any:
        res = self.call("Runtime.evaluate", session=session, expression=expr, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(str(res["exceptionDetails"])[:500])
        return res["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", session=True, format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def console_problems(self) -> list[str]:
        """Console calls, uncaught exceptions and log entries of level warning/error (CSP
        violations and blocked loads arrive as log entries)."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled":
                out.append(f"console.{p.get('type')}: {p.get('args')}")
            elif e["method"] == "Runtime.exceptionThrown":
                out.append(f"exception: {p.get('exceptionDetails')}")
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") in ("warning", "error"):
                out.append(f"log: {p['entry'].get('text')} ({p['entry'].get('url')})")
        return out

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (TimeoutError, RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        time.sleep(0)
