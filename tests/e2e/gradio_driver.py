"""Drive a launched Gradio app the way a hostile visitor can: every dependency of its config, by
``fn_index`` over Gradio's HTTP queue protocol (the browser's own path), private ones included.
Not a test file: the hosted-deployment tests use it."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx


class Driver:
    def __init__(
        self,
        url: str,
        auth: tuple[str, str] | None = None,
        headers: dict | None = None,
        config: dict | None = None,
    ):
        """One visitor: their cookies (the visitor cookie of a public instance, a login) are kept
        across calls; ``headers`` go with every request (an ``X-Forwarded-For`` for an address).
        ``config``: the app's config another visitor fetched (it is the same for everyone), so
        that a crowd of visitors need not each download it."""
        self.http = httpx.Client(base_url=url, timeout=httpx.Timeout(600, connect=10), headers=headers)
        if auth:
            r = self.http.post("/login", data={"username": auth[0], "password": auth[1]})
            r.raise_for_status()
        self.config = config or self.http.get("/config").json()
        self.prefix = self.config.get("api_prefix", "/gradio_api")
        self.components = {c["id"]: c for c in self.config["components"]}

    def dependencies(self) -> list[dict]:
        """Every dependency with a Python function behind it (a JS-only one runs in the browser)."""
        return [d for d in self.config["dependencies"] if d.get("backend_fn")]

    def describe(self, dep: dict) -> str:
        return f"#{dep['id']} {dep.get('api_name')} ({dep.get('api_visibility')})"

    def upload(self, path: Path) -> dict:
        with open(path, "rb") as f:
            r = self.http.post(f"{self.prefix}/upload", files={"files": (path.name, f)})
        r.raise_for_status()
        uploaded = r.json()[0]
        return {"path": uploaded, "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}

    def inputs(self, dep: dict, value_for: Callable[[dict], Any]) -> list:
        return [value_for(self.components[i]) for i in dep["inputs"]]

    def dependency(self, api_name: str) -> dict:
        return next(d for d in self.dependencies() if d.get("api_name") == api_name)

    def hold(self, dep: dict, data: list) -> socket.socket:
        """Start a dependency and listen to its stream on a raw socket, which the caller closes
        to hang up the way a killed client does."""
        session = uuid.uuid4().hex[:11]
        body = {"data": data, "fn_index": dep["id"], "session_hash": session, "event_data": None}
        self.http.post(f"{self.prefix}/queue/join", json=body).raise_for_status()
        url = httpx.URL(str(self.http.base_url))
        sock = socket.create_connection((url.host, url.port), timeout=10)
        headers = {"Host": f"{url.host}:{url.port}", "Accept": "text/event-stream", **dict(self.http.headers)}
        headers.pop("host", None)
        cookies = "; ".join(f"{c.name}={c.value}" for c in self.http.cookies.jar)
        if cookies:
            headers["Cookie"] = cookies
        lines = [f"GET {self.prefix}/queue/data?session_hash={session} HTTP/1.1"]
        lines += [
            f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("accept-encoding", "connection")
        ]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return sock

    def call(self, dep: dict, data: list, timeout: float = 600) -> tuple[bool, Any]:
        """Run one dependency to completion; returns (succeeded, outputs or the error message)."""
        session = uuid.uuid4().hex[:11]
        body = {
            "data": data,
            "fn_index": dep["id"],
            "session_hash": session,
            "event_data": None,
            "trigger_id": (dep.get("targets") or [[None]])[0][0],
        }
        r = self.http.post(f"{self.prefix}/queue/join", json=body)
        if r.status_code != 200:
            return False, f"join refused: {r.status_code} {r.text[:300]}"
        event_id = r.json()["event_id"]
        last = None
        with self.http.stream(
            "GET", f"{self.prefix}/queue/data", params={"session_hash": session}, timeout=timeout
        ) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("event_id") not in (None, event_id):
                    continue
                kind = msg.get("msg")
                if kind == "process_generating":
                    last = msg.get("output", {}).get("data")
                elif kind == "process_completed":
                    out = msg.get("output") or {}
                    if msg.get("success", True) and "error" not in out:
                        return True, out.get("data", last)
                    return False, out.get("error") or msg.get("title") or "failed"
                elif kind in ("close_stream", "unexpected_error"):
                    return False, msg.get("message") or kind
        return False, "the stream ended without a result"
