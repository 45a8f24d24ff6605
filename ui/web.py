"""What sits in front of the Gradio app on a shared instance (an ASGI middleware): the visitor
cookie that keeps a public visitor's work theirs across page loads, and the throttle on failed
logins. The rules themselves live in :mod:`auditor.policy`, the throttle's counting in
:mod:`auditor.quota`."""

from __future__ import annotations

import json
import secrets
from http.cookies import SimpleCookie

from starlette.requests import Request

from auditor.policy import Policy
from auditor.quota import LoginThrottle

VISITOR_COOKIE = "auditor_visitor"
COOKIE_DAYS = 30


def _cookies(scope) -> dict[str, str]:
    jar = SimpleCookie()
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # noqa: BLE001  (a malformed cookie header is ignored, not fatal)
                continue
    return {k: m.value for k, m in jar.items()}


class Gatekeeper:
    """ASGI middleware. ``visitors``: give each browser without one a random visitor cookie
    (HttpOnly, SameSite=Lax, 30 days) and make it visible to this very request. ``throttle``:
    refuse a login attempt with 429 while its user name or its address has too many recent
    failures; count the failures."""

    def __init__(
        self,
        app,
        *,
        rules: Policy,
        visitors: bool,
        throttle: LoginThrottle | None,
        max_upload: int | None = None,
    ):
        """``max_upload``: bytes of one upload request (all its files together, with 64 KB for
        the form around them); Gradio's own limit is per file."""
        self.app, self.rules, self.visitors, self.throttle = app, rules, visitors, throttle
        self.max_upload = max_upload

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.visitors and not _cookies(scope).get(VISITOR_COOKIE):
            token = secrets.token_urlsafe(24)
            scope = dict(scope)
            # into the one Cookie header the request has (Starlette reads only the first)
            mine = f"{VISITOR_COOKIE}={token}".encode()
            headers = [(n, v) for n, v in scope.get("headers", []) if n != b"cookie"]
            jar = b"; ".join([v for n, v in scope.get("headers", []) if n == b"cookie"] + [mine])
            scope["headers"] = [*headers, (b"cookie", jar)]
            secure = "; Secure" if scope.get("scheme") == "https" or _forwarded_https(scope) else ""
            cookie = (
                f"{VISITOR_COOKIE}={token}; Path=/; Max-Age={COOKIE_DAYS * 86400}; HttpOnly; "
                f"SameSite=Lax{secure}"
            ).encode()
            inner_send = send

            async def send(message):
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
                await inner_send(message)

        path = scope["path"].rstrip("/")
        if self.throttle is not None and scope["method"] == "POST" and path.endswith("/login"):
            return await self._login(scope, receive, send)
        if self.max_upload is not None and scope["method"] == "POST" and path.endswith("/upload"):
            return await self._upload(scope, receive, send)
        return await self.app(scope, receive, send)

    async def _upload(self, scope, receive, send):
        cap = self.max_upload + 64 * 1024
        length = dict(scope.get("headers", [])).get(b"content-length")
        too_big = {
            "detail": f"uploads on this instance are at most {self.max_upload // (1024 * 1024)} MB a request"
        }
        if length is not None and (not length.isdigit() or int(length) > cap):
            return await _reply(send, 413, too_big)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > cap:  # a body longer than it said, or sent without a length
                return {"type": "http.disconnect"}
            return message

        return await self.app(scope, counted, send)

    async def _login(self, scope, receive, send):
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > 64 * 1024:
                return await _reply(send, 413, {"detail": "login form too large"})

        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(scope, replay).form()
            user = str(form.get("username") or "").strip()
        except Exception:  # noqa: BLE001  (Gradio answers a malformed form itself)
            user = ""
        forwarded = b",".join(v for n, v in scope.get("headers", []) if n == b"x-forwarded-for")
        address = self.rules.visitor(  # every X-Forwarded-For line, as App.principal reads them
            (scope.get("client") or ("unknown", 0))[0], forwarded.decode("latin-1") or None
        )
        wait, mark = self.throttle.attempt(user, address)  # counted as a failure until it is not
        if wait > 0:
            return await _reply(
                send,
                429,
                {"detail": f"Too many failed logins; try again in {wait:.0f} s."},
                [(b"retry-after", str(max(1, round(wait))).encode())],
            )
        status = {}

        async def watch(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        sent = False

        async def receive_once():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        try:
            await self.app(scope, receive_once, watch)
        finally:
            code = status.get("code", 500)
            if code == 200:
                self.throttle.succeeded(user, address, mark)
            elif code >= 500:
                self.throttle.forgive(user, address, mark)


def _forwarded_https(scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"x-forwarded-proto" and value.split(b",")[-1].strip() == b"https":
            return True
    return False


async def _reply(send, status: int, payload: dict, headers: list | None = None) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})
