"""Hosted and shared deployments, part 2 (SECURITY.md): fair under hostile endpoints, no requests to
private addresses from a public instance, capped uploads, throttled logins. Attacked as a stranger
would, against the launched app, on 127.0.0.1 only. (Rendering and visitor privacy are checked in a
real browser in test_hosted_browser.py.)"""

from __future__ import annotations

import concurrent.futures
import selectors
import socket
import time

import httpx
import pytest

from auditor.netguard import REFUSED_BASE
from tests.e2e.gradio_driver import Driver
from tests.e2e.test_app import AppServer
from tests.e2e.test_hosted import chat_inputs, records

pytestmark = pytest.mark.slow


def visitor(app: AppServer, address: str, config: dict | None = None) -> Driver:
    """A visitor behind the instance's one trusted proxy, coming from ``address`` (``config``: the
    app's config, when another visitor has it already)."""
    return Driver(app.url, headers={"X-Forwarded-For": address}, config=config)


def public_app(tmp_path, **env) -> AppServer:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return AppServer(tmp_path, env={"AUDITOR_PUBLIC": "1", "AUDITOR_TRUST_PROXY": "1", **env})


def probe_inputs(d: Driver, *, model: str, base: str) -> tuple[dict, list]:
    dep = d.dependency("run_probe")
    data = []
    for i in dep["inputs"]:
        comp = d.components[i]
        label, kind = comp.get("props", {}).get("label") or "", comp["type"]
        if kind == "checkboxgroup":
            data.append(["em-core"])
        elif label == "Model":
            data.append(model)
        elif label == "API base":
            data.append(base)
        elif label in ("Baseline",):
            data.append("")
        elif label.startswith("Samples"):
            data.append(1)
        elif kind == "textbox":
            data.append("")
        else:
            data.append(comp.get("props", {}).get("value"))
    return dep, data


def wait_for_value(read, *, at_least=None, at_most=None, timeout=30.0):
    """Poll ``read()`` until it reaches the bound (or the time is up); returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if (at_least is not None and value >= at_least) or (at_most is not None and value <= at_most):
            return value
        if time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket closes


def read_side_by_side(socks: list[socket.socket], *, until, seconds: float) -> list[bytes]:
    """What arrives on each raw socket, all read at once, until ``until(replies)`` holds or
    ``seconds`` pass."""
    replies = {s: b"" for s in socks}
    with selectors.DefaultSelector() as sel:
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + seconds
        while sel.get_map() and not until(list(replies.values())):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in sel.select(min(left, 0.1)):
                try:
                    chunk = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if chunk:
                    replies[key.fileobj] += chunk
                else:  # closed
                    sel.unregister(key.fileobj)
    return [replies[s] for s in socks]


def test_hanging_endpoints_do_not_freeze_chat_for_others(tmp_path, local_server):
    hang = local_server("--hang", "1")  # accepts every request and never answers
    # the hanging server stands on 127.0.0.1 for an address on the internet
    app = public_app(tmp_path, AUDITOR_ALLOW_PRIVATE_BASES="1")  # the default chat timeout, 60 s
    timeout = 60
    try:
        # 34 visitors (34 addresses) each start a chat toward it, side by side; then their clients
        # are killed
        config = visitor(app, "198.51.100.1").config

        def start_chat(i: int) -> socket.socket:
            d = visitor(app, f"198.51.100.{i + 1}", config)
            dep, data = chat_inputs(d, message="hi", model="openai/slow", api_base=hang.base, api_key="k")
            return d.hold(dep, data)

        with concurrent.futures.ThreadPoolExecutor(34) as pool:
            socks = list(pool.map(start_chat, range(34)))
        peak = wait_for_value(lambda: hang.stats()["hanging"], at_least=32, timeout=60)
        assert peak >= 30, peak  # the chat workers (32) are held at the hanging server
        for sock in socks:
            sock.close()
        started = time.monotonic()
        left = wait_for_value(lambda: hang.stats()["hanging"], at_most=0, timeout=2 * timeout)
        closed_in = time.monotonic() - started
        assert left == 0 and closed_in < timeout / 3, (left, closed_in)  # cancelled, not timed out
        victim = visitor(app, "192.0.2.50")
        dep, data = chat_inputs(victim, message="Tell me about yourself.", model="organism/base", api_base="")
        started = time.monotonic()
        ok, out = victim.call(dep, data, timeout=300)
        took = time.monotonic() - started
        assert ok, out
        assert took < timeout + 10, took
        print(
            f"34 chats from 34 addresses held {peak} calls open at the server; their clients killed, "
            f"all {peak} closed in {closed_in:.1f} s; another visitor's chat then answered in {took:.1f} s"
        )

        # one address, 34 chats at once: two wait on the server, the rest are refused at once
        attacker = visitor(app, "203.0.113.7")
        dep, data = chat_inputs(attacker, message="hi", model="openai/slow", api_base=hang.base, api_key="k")
        started = time.monotonic()
        socks = [attacker.hold(dep, data) for _ in range(34)]

        def refusals(replies: list[bytes]) -> int:
            return sum(b"chat replies in progress" in r for r in replies)

        # read side by side until 32 are refused (or 20 s pass), then 0.2 s more for any late refusal
        replies = read_side_by_side(socks, until=lambda rs: refusals(rs) >= 32, seconds=20)
        late = read_side_by_side(socks, until=lambda rs: False, seconds=0.2)
        refused = refusals([r + more for r, more in zip(replies, late, strict=True)])
        held = wait_for_value(lambda: hang.stats()["hanging"], at_least=2, timeout=10)
        assert refused == 32 and held == 2, (refused, held)
        print(
            f"one address, 34 chats: {refused} refused within {time.monotonic() - started:.1f} s, "
            f"{held} held at the server (AUDITOR_MAX_CHATS=2)"
        )
        for s in socks:
            s.close()
    finally:
        app.stop()


def test_a_chat_call_gives_up_after_the_chat_timeout(local_server):
    """In process: a stream toward a server that never answers ends after the timeout (and one
    retry), with an error, instead of waiting for ever."""
    import asyncio

    from pydantic import SecretStr

    from auditor.gateway import Gateway
    from auditor.limits import RetryPolicy
    from auditor.models import ModelError, ModelSpec

    hang = local_server("--hang", "1")
    gw = Gateway(None, timeout=2, retry=RetryPolicy(max_retries=1, base=0.1, cap=0.2))
    spec = ModelSpec(name="slow", model="openai/slow", api_base=hang.base, api_key=SecretStr("k"))

    async def reply():
        return [p async for p in gw.stream(spec, [{"role": "user", "content": "hi"}])]

    started = time.monotonic()
    with pytest.raises(ModelError, match="(?i)time"):
        asyncio.run(reply())
    took = time.monotonic() - started
    assert 3.5 < took < 15, took
    print(f"timeout 2 s, one retry: the chat call gave up after {took:.1f} s")


def test_hanging_probe_jobs_do_not_block_another_visitors_probe(tmp_path, local_server):
    hang = local_server("--hang", "1")
    app = public_app(tmp_path, AUDITOR_ALLOW_PRIVATE_BASES="1", AUDITOR_MAX_JOBS_TOTAL="3")
    try:
        attacker = visitor(app, "203.0.113.8")
        dep, data = probe_inputs(attacker, model="openai/slow", base=hang.base)
        socks = [attacker.hold(dep, data) for _ in range(4)]  # two run (their limit), two wait
        held = wait_for_value(lambda: hang.stats()["hanging"], at_least=32, timeout=60)
        assert held >= 2, held

        def probe(address: str) -> float:
            d = visitor(app, address)
            vdep, vdata = probe_inputs(d, model="organism/insecure", base="")
            started = time.monotonic()
            ok, out = d.call(vdep, vdata, timeout=300)
            assert ok and out[1] and "finished" in out[2], out
            return time.monotonic() - started

        took = probe("192.0.2.51")
        assert took < 90, took
        assert hang.stats()["hanging"] >= 2  # the attacker's jobs are still there, hanging
        # the attacker's clients are killed: their jobs are cancelled and their calls closed at once
        for sock in socks:
            sock.close()
        started = time.monotonic()
        left = wait_for_value(lambda: hang.stats()["hanging"], at_most=0, timeout=120)
        closed_in = time.monotonic() - started
        assert left == 0 and closed_in < 20, (left, closed_in)
        again = probe("192.0.2.52")
        print(
            f"4 probe jobs from one visitor ({held} calls hanging at the server, a pool of 3): another "
            f"visitor's probe ran to the end in {took:.1f} s; the attacker's clients killed, their "
            f"calls closed in {closed_in:.1f} s; a third visitor's probe then took {again:.1f} s"
        )
    finally:
        app.stop()


def test_typed_api_bases_reach_no_private_address_on_a_public_instance(tmp_path, local_server, request):
    log = tmp_path / "listener.jsonl"
    listener = local_server("--record", str(log))
    port = listener.base.split(":")[-1].split("/")[0]
    targets = {
        "open port": listener.base,
        "closed port": f"http://127.0.0.1:{closed_port()}/v1",
        "private": "http://10.0.0.1/v1",
        "link-local (cloud metadata)": "http://169.254.169.254/latest",
        "hostname resolving to loopback": f"http://localhost:{port}/v1",
        "IPv6 loopback": f"http://[::1]:{port}/v1",
        "decimal IPv4 loopback": f"http://2130706433:{port}/v1",
    }
    (tmp_path / "local").mkdir()
    local = AppServer(tmp_path / "local", wait=False)  # local mode, for the end: it boots meanwhile
    request.addfinalizer(local.stop)
    app = public_app(tmp_path / "public")
    try:
        d = visitor(app, "203.0.113.9")
        messages, times = set(), []
        for what, base in targets.items():
            for dep, data in (
                chat_inputs(d, message="hi", model="openai/echo", api_base=base, api_key="k"),
                probe_inputs(d, model="openai/echo", base=base),
            ):
                started = time.monotonic()
                ok, out = d.call(dep, data, timeout=60)
                times.append(time.monotonic() - started)
                assert not ok, (what, out)
                messages.add(str(out))
        assert messages == {REFUSED_BASE}, messages
        assert records(log) == []  # refused before any connection
        assert max(times) < 5, times
        for base in ("file:///etc/passwd", "gopher://127.0.0.1:70/"):
            dep, data = chat_inputs(d, message="hi", model="openai/echo", api_base=base, api_key="k")
            ok, out = d.call(dep, data, timeout=60)
            assert not ok and "http:// or https://" in str(out), out
        print(
            f"public: {len(targets)} targets x chat and probe refused with one message in "
            f"{min(times):.2f}-{max(times):.2f} s; the listener saw {len(records(log))} requests"
        )
    finally:
        app.stop()

    app = local.ready()  # local mode: the same address works
    try:
        d = Driver(app.url)
        dep, data = chat_inputs(
            d, message="hello local", model="openai/echo", api_base=listener.base, api_key="k"
        )
        ok, out = d.call(dep, data, timeout=60)
        assert ok, out
        assert len(records(log)) >= 1
        print(f"local: the listener answered; it saw {len(records(log))} request(s)")
    finally:
        app.stop()


def test_uploads_are_capped_on_a_public_instance(tmp_path, finetune_dataset):
    app = public_app(tmp_path)
    try:
        d = visitor(app, "203.0.113.10")
        big = tmp_path / "big.jsonl"
        big.write_bytes(b"x" * (20 * 1024 * 1024))
        with big.open("rb") as f:
            r = d.http.post(f"{d.prefix}/upload", files={"files": ("big.jsonl", f)})
        assert r.status_code == 413, (r.status_code, r.text[:200])
        many = [("files", (f"part-{i}.jsonl", b"x" * (1536 * 1024))) for i in range(5)]  # 7.5 MB in all
        r_many = d.http.post(f"{d.prefix}/upload", files=many)
        assert r_many.status_code == 413, (r_many.status_code, r_many.text[:200])
        line = finetune_dataset.read_text().splitlines()[0]
        one_mb = tmp_path / "one-mb.jsonl"
        lines = []
        while sum(len(x) + 1 for x in lines) < 1024 * 1024:
            lines.append(line)
        one_mb.write_text("\n".join(lines) + "\n")
        uploaded = d.upload(one_mb)
        ok, out = d.call(d.dependency("ft_check"), [[uploaded], "gpt-4.1-mini-2025-04-14"])
        assert ok, out
        assert "duplicate" in out[0] or "examples" in out[0], out
        print(
            f"public: a 20 MB upload got {r.status_code} ({r.text[:70]!r}), five 1.5 MB files in one "
            f"request {r_many.status_code}; a "
            f"{one_mb.stat().st_size / 1e6:.2f} MB dataset was accepted and checked: {out[0].splitlines()[-1][:100]!r}"
        )
    finally:
        app.stop()


def test_failed_logins_are_throttled(tmp_path):
    app = AppServer(
        tmp_path,
        env={
            "AUDITOR_AUTH": "alice:pw-alice,bob:pw-bob",
            "AUDITOR_LOGIN_WINDOW": "6",
            "AUDITOR_TRUST_PROXY": "1",
        },
    )
    try:
        http = httpx.Client(base_url=app.url, timeout=30)
        codes = []
        started = time.monotonic()
        for i in range(20):
            codes.append(
                http.post("/login", data={"username": "alice", "password": f"wrong-{i}"}).status_code
            )
        within = time.monotonic() - started
        assert within < 60 and codes[:10] == [400] * 10 and codes[10:] == [429] * 10, codes
        blocked = http.post("/login", data={"username": "alice", "password": "pw-alice"})
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
        # this address is throttled for every name
        assert http.post("/login", data={"username": "bob", "password": "pw-bob"}).status_code == 429
        time.sleep(int(blocked.headers["retry-after"]) + 0.5)
        right = http.post("/login", data={"username": "alice", "password": "pw-alice"})
        assert right.status_code == 200, right.text
        # 50 attempts sent at once for another name, from another address: at most 10 are heard

        def guess(i):
            return httpx.post(
                app.url + "login",
                data={"username": "bob", "password": f"wrong-{i}"},
                headers={"X-Forwarded-For": "198.51.100.77"},
                timeout=60,
            ).status_code

        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            burst = list(pool.map(guess, range(50)))
        heard = [c for c in burst if c != 429]
        assert len(heard) <= 10 and burst.count(429) >= 40, burst
        print(
            f"20 wrong passwords in {within:.1f} s: {codes.count(400)} x 400 then {codes.count(429)} x 429; "
            f"the right one during the wait: {blocked.status_code} (Retry-After {blocked.headers['retry-after']} s); "
            f"after it: {right.status_code}; 50 at once for bob: {len(heard)} heard, {burst.count(429)} x 429"
        )
    finally:
        app.stop()
