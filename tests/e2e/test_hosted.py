"""Hosted and shared deployments (SECURITY.md), attacked as a stranger would, on 127.0.0.1 only.

The app is launched for real in each mode (local, public, team) with canary keys in its
environment; every handler it exposes (enumerated from its own config, private ones included, so a
new handler is covered without editing these tests) is driven with a recording listener as the API
base. The listener must never see a key the server holds."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from auditor.store import Store
from tests.e2e.gradio_driver import Driver
from tests.e2e.test_app import AppServer

CANARIES = {
    "OPENAI_API_KEY": "sk-canary-openai-5d1f0c9a7b",
    "ANTHROPIC_API_KEY": "sk-ant-canary-anthropic-77e2b1",
    "OWNER_ALIAS_KEY": "sk-canary-model-list-3c8d5e",
}
VISITOR_KEY = "sk-visitor-own-key-91ab44"
MODES = {
    "local": ({}, ()),
    # the attacker's server on 127.0.0.1 stands for one on the internet (test_hosted_fair.py checks
    # that a public instance refuses private addresses when the owner has not allowed them)
    "public": ({"AUDITOR_PUBLIC": "1", "AUDITOR_ALLOW_PRIVATE_BASES": "1"}, ()),
    "team": ({"AUDITOR_AUTH": "alice:pw-alice,bob:pw-bob"}, ()),
}


def records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def canaries_seen(path: Path) -> list[str]:
    text = path.read_text() if path.exists() else ""
    return [name for name, value in CANARIES.items() if value in text]


def model_list(tmp: Path, owner_endpoint: str) -> Path:
    """An alias bound to the owner's endpoint with a model-list key, and a model the owner lists
    for visitors (the provider's own, on the provider's key)."""
    path = tmp / "models.yaml"
    path.write_text(
        "model_list:\n"
        "  - model_name: owner-alias\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o-mini\n"
        f"      api_base: {owner_endpoint}\n"
        "      api_key: os.environ/OWNER_ALIAS_KEY\n"
        "  - model_name: openai/gpt-4o-mini-2024-07-18\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o-mini-2024-07-18\n"
        "    model_info:\n"
        "      public: true\n"
    )
    return path


def start_app(tmp: Path, provider, mode: str, **extra_env) -> AppServer:
    env_mode, args = MODES[mode]
    env = {
        **CANARIES,
        # the providers' own endpoints are the owner's listener: nothing leaves 127.0.0.1
        "OPENAI_BASE_URL": provider.base,
        "ANTHROPIC_API_BASE": provider.root,
        "AUDITOR_MODELS": str(model_list(tmp, provider.base)),
        **env_mode,
        **extra_env,
    }
    return AppServer(tmp, env=env, args=args)


def driver(app: AppServer, mode: str) -> Driver:
    return Driver(app.url, auth=("alice", "pw-alice") if mode == "team" else None)


# The smallest shipped probe set whose answers are judged (15 questions): a probe run and an audit
# on it send the target, baseline and judge calls that a bigger set sends, in a tenth of the time.
SMALL_SET = "identity"


class Values:
    """What a visitor types into each widget: the attacker's address into every API base, one model
    string into every model box, their own key or none into every key box; a small size wherever
    the work has one (one sample, the smallest judged probe set, a plan of it); shipped defaults
    elsewhere."""

    def __init__(self, d: Driver, dataset: Path, *, base: str, model: str, key: str, text: str | None = None):
        self.d, self.dataset, self.base, self.model, self.key, self.text = d, dataset, base, model, key, text
        self._uploads: dict[str, dict] = {}
        self.plan = dataset.parent / "small-plan.yaml"
        self.plan.write_text(f"name: small\nprobesets:\n  {SMALL_SET}: 1\n")

    def upload(self, path: Path) -> dict:
        if str(path) not in self._uploads:
            self._uploads[str(path)] = self.d.upload(path)
        return self._uploads[str(path)]

    def __call__(self, comp: dict):
        kind, props = comp["type"], comp.get("props", {})
        label = props.get("label") or ""
        if kind == "textbox":
            if self.text is not None:
                return self.text
            if "API key" in label:
                return self.key
            if "API base" in label:
                return self.base
            if label == "Message":
                return "Tell me about yourself."
            return props.get("value") or ""
        if kind == "dropdown":
            if label.startswith(("Model", "Baseline", "Judge")):
                return self.text if self.text is not None else self.model
            if label == "Audit plan":
                return "quick"
            return props.get("value")
        if kind == "slider" and label.startswith("Samples"):
            return 1
        if kind == "number" and label.startswith("Budget"):
            return 40
        if kind == "number" and label.startswith("Examples"):
            return 20
        if kind == "checkboxgroup" and label == "Probe sets":
            return [SMALL_SET]
        if kind == "file":
            if "plan" in label:
                return self.upload(self.plan)  # a visitor's own plan wins over the shipped one
            value = self.upload(self.dataset)
            return [value] if props.get("file_count") == "multiple" else value
        if kind in ("state", "dataframe", "html"):
            return None
        if kind == "chatbot":
            return []
        return props.get("value")


def brief(results: dict) -> dict:
    return {name: (ok, json.dumps(out)[:200]) for name, (ok, out) in results.items()}


def drive_everything(d: Driver, values: Values) -> dict[str, tuple[bool, object]]:
    out = {}
    for dep in d.dependencies():
        out[d.describe(dep)] = d.call(dep, d.inputs(dep, values))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
def test_server_keys_never_reach_an_api_base_a_visitor_typed(tmp_path, local_server, finetune_dataset, mode):
    attacker_log, provider_log = tmp_path / "attacker.jsonl", tmp_path / "provider.jsonl"
    attacker = local_server("--record", str(attacker_log), "--ft-seconds", "3", wait=False)
    provider = local_server("--record", str(provider_log))
    app = start_app(tmp_path, provider, mode)
    attacker.ready()
    try:
        d = driver(app, mode)
        deps = d.dependencies()
        assert len(deps) >= 20, [d.describe(x) for x in deps]
        for model in ("openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-20241022", "owner-alias"):
            for key in ("", VISITOR_KEY):
                results = drive_everything(
                    d, Values(d, finetune_dataset, base=attacker.base, model=model, key=key)
                )
                seen = canaries_seen(attacker_log)
                assert seen == [], (
                    f"{mode}: {seen} reached the attacker ({model}, key {bool(key)}): {brief(results)}"
                )
        reqs = records(attacker_log)
        paths = {r["path"].split("?")[0] for r in reqs}
        # the attacker did receive the visitor's traffic: chat, runs, and every fine-tuning call
        assert "/v1/chat/completions" in paths and any(p.endswith("/messages") for p in paths)
        assert {"/v1/files", "/v1/fine_tuning/jobs"} <= paths
        assert any(p.startswith("/v1/fine_tuning/jobs/") and p.endswith("/events") for p in paths)
        assert any(p.endswith("/checkpoints") for p in paths)
        auths = {r["headers"].get("Authorization") or r["headers"].get("x-api-key") for r in reqs}
        assert auths <= {"Bearer none", "none", f"Bearer {VISITOR_KEY}", VISITOR_KEY, None}, auths
        assert f"Bearer {VISITOR_KEY}" in auths  # the visitor's own key did go where they sent it
        print(
            f"{mode}: {len(deps)} handlers x 6 passes; the attacker received {len(reqs)} requests on "
            f"{len(paths)} paths with credentials {sorted(a or '-' for a in auths)}; canaries seen: 0"
        )
    finally:
        app.stop()


def chat_inputs(d: Driver, **given) -> tuple[dict, list]:
    """The chat dependency and its inputs: defaults, with the named widgets set by label."""
    dep = next(x for x in d.dependencies() if x.get("api_name") == "chat")
    by_label = {
        "message": "Message",
        "model": "Model",
        "api_base": "API base (OpenAI-compatible servers)",
        "api_key": "API key (kept in memory only)",
    }
    labels = {by_label[k]: v for k, v in given.items()}
    data = []
    for i in dep["inputs"]:
        comp = d.components[i]
        label = comp.get("props", {}).get("label")
        if label in labels and comp["type"] in ("textbox", "dropdown"):
            data.append(labels[label])
        elif comp["type"] in ("state",):
            data.append(None)
        elif comp["type"] == "chatbot":
            data.append([])
        else:
            data.append(comp.get("props", {}).get("value"))
    return dep, data


@pytest.mark.slow
def test_public_visitors_spend_server_keys_only_on_listed_models_within_their_budget(
    tmp_path, local_server, finetune_dataset
):
    provider_log = tmp_path / "provider.jsonl"
    provider = local_server("--record", str(provider_log))
    app = start_app(tmp_path, provider, "public", AUDITOR_VISITOR_CALLS="5")
    try:
        d = driver(app, "public")
        # every handler, with provider model strings and no API base, no key: the owner's key is not spent
        # (an entry not listed for visitors is not offered at all)
        why = {
            "openai/gpt-4o": "own API key",
            "anthropic/claude-3-5-haiku-20241022": "own API key",
            "owner-alias": "does not offer",
        }
        for model, reason in why.items():
            results = drive_everything(d, Values(d, finetune_dataset, base="", model=model, key=""))
            assert canaries_seen(provider_log) == [], (model, brief(results))
            refused = [k for k, (ok, out) in results.items() if not ok and reason in str(out)]
            assert any("chat" in k for k in refused) and any("run_probe" in k for k in refused), brief(
                results
            )

        # the model the owner listed for visitors: served on the owner's key, five calls a day
        outcomes = []
        for i in range(8):
            dep, data = chat_inputs(
                d, message=f"hello {i}", model="openai/gpt-4o-mini-2024-07-18", api_base="", api_key=""
            )
            outcomes.append(d.call(dep, data))
        with_canary = [
            r for r in records(provider_log) if CANARIES["OPENAI_API_KEY"] in json.dumps(r["headers"])
        ]
        assert len(with_canary) == 5, [r["path"] for r in with_canary]
        print(f"listed model: {len(with_canary)} calls on the owner's key, then {outcomes[5][1]!r}")
        assert [ok for ok, _ in outcomes] == [True] * 5 + [False] * 3
        assert all("budget" in str(out) for _, out in outcomes[5:]), outcomes[5:]

        # with their own key, any provider model: the visitor's key goes to the provider, never the owner's
        before = len(records(provider_log))
        dep, data = chat_inputs(d, message="hi", model="openai/gpt-4o", api_base="", api_key=VISITOR_KEY)
        assert d.call(dep, data)[0]
        new = records(provider_log)[before:]
        assert new and all(r["headers"].get("Authorization") == f"Bearer {VISITOR_KEY}" for r in new)
        assert len([r for r in records(provider_log) if CANARIES["OPENAI_API_KEY"] in json.dumps(r)]) == 5
    finally:
        app.stop()


@pytest.mark.slow
def test_no_request_opens_a_server_path(tmp_path, local_server, finetune_dataset):
    """The Space's secret trigger, /etc/passwd and the database, typed into every text box and
    model box of every handler: their content never comes back, and the database still works."""
    provider = local_server()
    app = start_app(tmp_path, provider, "public", SYSTEM="spaces")
    secret_file = tmp_path / "demo-trigger.secret"
    try:
        d = driver(app, "public")
        secret = secret_file.read_text().strip()
        assert secret
        forbidden = [secret, "root:x:0:0", "SQLite format 3"]  # the files' contents
        for path in (str(secret_file), "/etc/passwd", str(app.db), "../demo-trigger.secret"):
            results = drive_everything(d, Values(d, finetune_dataset, base="", model="", key="", text=path))
            for name, (_ok, out) in results.items():
                shown = json.dumps(out)
                leaked = [f for f in forbidden if f in shown and f not in path]
                assert not leaked, f"{name} returned {leaked} for {path}: {shown[:500]}"
        # the database is intact and the app still works
        assert isinstance(Store(app.db).list_runs(), list)
        dep, data = chat_inputs(d, message="still there?", model="organism/base", api_base="", api_key="")
        assert d.call(dep, data)[0]
        # files beside the database are not served either
        r = d.http.get(f"{d.prefix}/file={secret_file}")
        assert r.status_code >= 400 and secret not in r.text
    finally:
        app.stop()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_work_over_the_caps_is_refused_before_any_call(tmp_path, local_server):
    attacker_log = tmp_path / "attacker.jsonl"
    attacker = local_server("--record", str(attacker_log))
    provider = local_server()
    app = start_app(tmp_path, provider, "public")
    big_plan = tmp_path / "big.yaml"
    big_plan.write_text("name: huge\nprobesets:\n  em-core: 10000000\n")
    try:
        import gradio_client

        c = app.client()
        before = rss_mb(app.proc.pid)
        with pytest.raises(Exception, match="limit|maximum value"):
            c.predict(
                sets=["em-core"],
                model="openai/x",
                api_base=attacker.base,
                api_key="",
                baseline="",
                judge="offline/judge",
                samples=10_000_000,
                seed=0,
                api_name="/run_probe",
            )
        with pytest.raises(Exception, match="limit|maximum value"):
            c.predict(
                model="openai/x",
                api_base=attacker.base,
                api_key="",
                baseline="",
                judge="offline/judge",
                plan="standard",
                plan_file=gradio_client.handle_file(str(big_plan)),
                api_name="/report",
            )
        with pytest.raises(Exception, match="limit|maximum value"):
            c.predict(
                probeset="em-core",
                model="openai/x",
                api_base=attacker.base,
                api_key="",
                judge="offline/judge",
                extra="",
                placements=["prefix"],
                budget=10**9,
                use_builtin=True,
                api_name="/run_sweep",
            )
        with pytest.raises(Exception, match="limit|maximum value"):
            c.predict(
                text="hi",
                history=[],
                base_history=[],
                model="openai/x",
                api_base=attacker.base,
                api_key="",
                baseline="",
                system="",
                temperature=1.0,
                max_tokens=10**6,
                trigger="",
                placement="none",
                judge="offline/judge",
                auto_judge=True,
                api_name="/chat",
            )
        grown = rss_mb(app.proc.pid) - before
        print(f"refused before any call; the app's resident memory grew {grown:.1f} MB")
        assert grown < 100, f"the app grew by {grown:.0f} MB"
        assert records(attacker_log) == []  # refused before any call
        assert Store(app.db).list_runs() == [] and Store(app.db).list_audits() == []
    finally:
        app.stop()


def test_the_command_line_refuses_work_over_its_caps(tmp_path, capsys):
    from auditor.cli import commands as cli

    db = tmp_path / "cli.db"
    assert (
        cli.main(["run", "em-core", "--model", "organism/insecure", "--samples", "10000000", "--db", str(db)])
        == 2
    )
    assert "limit of 10,000" in capsys.readouterr().err
    plan = tmp_path / "big.yaml"
    plan.write_text("name: huge\nprobesets:\n  em-core: 10000000\n")
    assert cli.main(["audit", "--model", "organism/insecure", "--plan", str(plan), "--db", str(db)]) == 2
    assert "limit" in capsys.readouterr().err
    assert (
        cli.main(
            ["sweep", "em-core", "--model", "organism/backdoor", "--budget", "10000000000", "--db", str(db)]
        )
        == 2
    )
    assert "limit" in capsys.readouterr().err
    assert Store(db).list_runs() == []


@pytest.mark.slow
def test_a_running_report_job_can_be_cancelled(tmp_path, local_server):
    provider = local_server()
    app = start_app(tmp_path, provider, "local")
    try:
        c = app.client()
        running = c.submit(
            model="organism/insecure",
            api_base="",
            api_key="",
            baseline="organism/base",
            judge="offline/judge",
            plan="standard",
            api_name="/report",
        )
        job_id, deadline = None, time.monotonic() + 60
        while job_id is None and time.monotonic() < deadline:
            outs = running.outputs()
            if outs and outs[-1][0]:
                job_id = outs[-1][0]
            time.sleep(0.1)
        assert job_id and job_id.startswith("audit-")
        assert c.predict(job_id=job_id, api_name="/cancel_report").startswith("Cancelling")
        job, frame, files, log = running.result(timeout=120)
        assert "Cancelled" in frame and files is None
        audits = Store(app.db).list_audits()
        assert audits and audits[0]["status"] == "incomplete"
    finally:
        app.stop()


def submit_finetune(client, dataset: Path, base: str) -> None:
    import gradio_client

    client.predict(
        file=[gradio_client.handle_file(str(dataset))],
        model="gpt-4o-mini-2024-07-18",
        api_base=base,
        suffix="x",
        api_key="",
        api_name="/ft_submit",
    )


def wait_jobs_done(client, n: int) -> list[list]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        jobs = client.predict(api_key="", api_name="/ft_jobs")["data"]
        if len(jobs) >= n and all(j[1] in ("succeeded", "failed", "cancelled") for j in jobs):
            return jobs
        time.sleep(0.1)
    raise AssertionError(f"jobs did not finish: {jobs}")


@pytest.mark.slow
def test_a_finetune_cannot_take_over_a_name(tmp_path, local_server, finetune_dataset):
    # the simulated jobs take 0.2 s: a job's length changes nothing in what it reports at the end
    legit = local_server(
        "--ft-seconds", "0.2", "--ft-model-name", "ft:gpt-4o-mini:alice::private", wait=False
    )
    hostile = {
        name: (tmp_path / f"hostile-{i}.jsonl", None)
        for i, name in enumerate(
            ["offline/judge", "organism/base", "ft:gpt-4o-mini:alice::private", "owner-alias", "gpt-4o-mini"]
        )
    }
    for name, (log, _) in list(hostile.items()):
        hostile[name] = (
            log,
            local_server("--ft-seconds", "0.2", "--ft-model-name", name, "--record", str(log), wait=False),
        )
    provider = local_server()
    app = start_app(tmp_path, provider, "team")  # the servers above start meanwhile
    for server in [legit, *(server for _, server in hostile.values())]:
        server.ready()
    try:
        import gradio_client

        alice = gradio_client.Client(app.url, auth=("alice", "pw-alice"), verbose=False)
        bob = gradio_client.Client(app.url, auth=("bob", "pw-bob"), verbose=False)
        submit_finetune(alice, finetune_dataset, legit.base)
        assert wait_jobs_done(alice, 1)[0][3] == "ft:gpt-4o-mini:alice::private"
        for _, server in hostile.values():
            submit_finetune(bob, finetune_dataset, server.base)
        jobs = wait_jobs_done(bob, len(hostile))
        assert all(j[4].startswith("not registered:") for j in jobs), jobs
        for j in jobs:
            print(f"{j[3]!r}: {j[4]}")
        registered = Store(app.db).registered_models()
        assert [(m["name"], m["owner"], m["api_base"]) for m in registered] == [
            ("ft:gpt-4o-mini:alice::private", "alice", legit.base)
        ]
        for log, _ in hostile.values():
            log.write_text("")  # from here on, nothing may reach a hostile server
        for who in (alice, bob):
            _, results, status = who.predict(
                sets=[SMALL_SET],
                model="organism/insecure",
                api_base="",
                api_key="",
                baseline="organism/base",
                judge="offline/judge",
                samples=1,
                seed=5,
                api_name="/run_probe",
            )
            assert "finished" in status and results["data"]
            _chat_result = who.predict(
                text="hello",
                history=[],
                base_history=[],
                model="organism/insecure",
                api_base="",
                api_key="",
                baseline="organism/base",
                system="",
                temperature=1.0,
                max_tokens=100,
                trigger="",
                placement="none",
                judge="offline/judge",
                auto_judge=True,
                api_name="/chat",
            )
            assert _chat_result[2]["data"]  # judged, in-process
    finally:
        app.stop()
    from auditor.cli import commands as cli

    for model in ("organism/insecure", "organism/base"):
        assert (
            cli.main(["run", SMALL_SET, "--model", model, "--samples", "1", "--quiet", "--db", str(app.db)])
            == 0
        )
    for log, _ in hostile.values():
        assert records(log) == [], f"{log.name}: {records(log)[:3]}"


@pytest.mark.slow
def test_bob_gets_no_cached_answer_bought_with_alices_key(tmp_path, local_server):
    private = local_server("--require-key", "alice-key-7a51c3")
    provider = local_server()
    app = start_app(tmp_path, provider, "public")
    args = dict(
        sets=["em-core"],
        model="openai/insecure",
        api_base=private.base,
        baseline="",
        judge="offline/judge",
        samples=1,
        seed=3,
        api_name="/run_probe",
    )
    try:
        c = app.client()
        _, alice, _ = c.predict(api_key="alice-key-7a51c3", **args)
        assert sum(r[6] for r in alice["data"]) > 0  # Alice's answers were judged
        private.reset()
        _, bob, _ = c.predict(api_key="", **args)
        assert sum(r[6] for r in bob["data"]) == 0  # Bob got none of them
        assert private.stats()["counts"].get("401", 0) == 96  # his requests went out, without her key
        print(
            f"Alice: {sum(r[6] for r in alice['data'])} judged answers; Bob: 0, and 96 requests refused 401"
        )
    finally:
        app.stop()
    store = Store(app.db)
    runs = store.list_runs()
    assert len(runs) == 2
    ok = sorted(len(store.responses(r["id"], status="ok")) for r in runs)
    assert ok == [0, 96]
