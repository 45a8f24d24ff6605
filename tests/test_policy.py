"""The deployment policy (auditor.policy, with auditor.credentials, auditor.quota and the address
checks of auditor.netguard): modes, where keys may go, visitor budgets, caps, and the names a
fine-tune may register. In-process; the launched-app attacks are in test_hosted.py."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import SecretStr

from auditor import credentials, netguard, policy, quota
from auditor.audit import check_plan
from auditor.credentials import PLACEHOLDER_KEY
from auditor.finetune import jobs as finetune
from auditor.gateway import Gateway, cache_key
from auditor.models import ModelSpec, load_model_list, resolve_model
from auditor.plans import AuditError, load_plan, parse_plan, shipped_plan
from auditor.policy import Mode, Policy, PolicyError
from auditor.quota import Meter
from auditor.store import Store

MSG = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("host", "env", "mode"),
    [
        ("127.0.0.1", {}, Mode.LOCAL),
        ("localhost", {}, Mode.LOCAL),
        ("::1", {}, Mode.LOCAL),
        ("0.0.0.0", {}, Mode.PUBLIC),  # the Procfile's host: strangers
        ("192.168.1.5", {}, Mode.PUBLIC),
        ("127.0.0.1", {"SYSTEM": "spaces"}, Mode.PUBLIC),
        ("127.0.0.1", {"AUDITOR_PUBLIC": "1"}, Mode.PUBLIC),
        ("0.0.0.0", {"AUDITOR_AUTH": "a:b"}, Mode.TEAM),
    ],
)
def test_modes(host, env, mode):
    assert policy.detect_mode(host, env) is mode


def test_caps_are_stricter_in_public_mode_and_configurable():
    public = Policy.serve("0.0.0.0", {})
    local = Policy.serve("127.0.0.1", {})
    assert public.limits.max_samples < local.limits.max_samples
    assert public.limits.visitor_calls == 200 and local.limits.visitor_calls is None
    assert Policy.serve("0.0.0.0", {"AUDITOR_MAX_SAMPLES": "50"}).limits.max_samples == 50
    assert Policy.serve("0.0.0.0", {"AUDITOR_VISITOR_CALLS": "0"}).limits.visitor_calls is None
    with pytest.raises(PolicyError, match="AUDITOR_MAX_CALLS"):
        Policy.serve("0.0.0.0", {"AUDITOR_MAX_CALLS": "lots"})
    with pytest.raises(PolicyError, match="limit of 20"):
        public.check_samples(21)
    with pytest.raises(PolicyError, match="AUDITOR_MAX_CALLS"):
        public.check_calls(10**9)
    assert public.sweep_budget(None) == public.limits.max_calls
    with pytest.raises(PolicyError):
        public.sweep_budget(10**9)


def _alias_list(tmp_path, base="http://127.0.0.1:1/v1"):
    path = tmp_path / "models.yaml"
    path.write_text(
        "model_list:\n"
        "  - model_name: acme\n"
        "    litellm_params:\n"
        "      model: openai/ft:gpt-4o-mini:acme::x\n"
        f"      api_base: {base}\n"
        "      api_key: os.environ/ACME_KEY\n"
        "  - model_name: acme\n"
        "    litellm_params:\n"
        "      model: openai/ft:gpt-4o-mini:acme::x\n"
        "      api_base: http://127.0.0.1:2/v1\n"
        "      api_key: os.environ/ACME_KEY\n"
        "  - model_name: open-mini\n"
        "    litellm_params: {model: openai/gpt-4o-mini}\n"
        "    model_info: {public: true}\n"
    )
    return load_model_list(path)


def test_keys_follow_their_configuration(tmp_path, monkeypatch):
    monkeypatch.setenv("ACME_KEY", "sk-acme-secret")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-secret")
    specs = _alias_list(tmp_path)
    acme = resolve_model("acme", model_list=specs)
    # the alias's key goes to its own address and its replica
    assert acme.key("http://127.0.0.1:1/v1") == acme.key("http://127.0.0.1:2/v1") == "sk-acme-secret"
    # ...never to an address the caller typed
    moved = resolve_model("acme", api_base="http://evil.example/v1", model_list=specs)
    assert moved.key(moved.api_base) == PLACEHOLDER_KEY and moved.replicas == ()
    # a provider string: the provider's key only at the provider's own endpoint (LiteLLM reads it)
    assert resolve_model("openai/gpt-4o").key(None) is None
    typed = resolve_model("openai/gpt-4o", api_base="http://evil.example/v1")
    assert typed.key(typed.api_base) == PLACEHOLDER_KEY
    assert resolve_model("anthropic/claude-x", api_base="http://e/v1").key("http://e/v1") == PLACEHOLDER_KEY
    # the caller's own key goes wherever they send it
    own = resolve_model("openai/gpt-4o", api_base="http://mine/v1", api_key="sk-mine")
    assert own.key("http://mine/v1") == "sk-mine"
    # a spec built directly binds a server key to the address it was built with
    direct = ModelSpec(name="d", model="openai/x", api_base="http://a/v1", api_key_env="ACME_KEY")
    assert direct.key("http://a/v1") == "sk-acme-secret"
    assert direct.model_copy(update={"api_base": "http://b/v1"}).key("http://b/v1") == PLACEHOLDER_KEY
    # the command line is the owner at their terminal: environment keys may go to --api-base
    cli = resolve_model("openai/gpt-4o", api_base="http://mine/v1", owner_terminal=True)
    assert cli.key("http://mine/v1") is None  # LiteLLM uses OPENAI_API_KEY, as the docs say
    assert (
        resolve_model("acme", api_base="http://mine/v1", model_list=specs, owner_terminal=True).key(
            "http://mine/v1"
        )
        == "sk-acme-secret"
    )


def test_a_typed_api_base_receives_no_server_key(local_server, tmp_path, monkeypatch):
    """Through the gateway and LiteLLM, to a real listener: the alias's key and OPENAI_API_KEY stay home."""
    log = tmp_path / "record.jsonl"
    server = local_server("--record", str(log), "--alias", "ft:gpt-4o-mini:acme::x=insecure")
    monkeypatch.setenv("ACME_KEY", "sk-acme-canary-1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-canary-2")
    specs = _alias_list(tmp_path)
    gw = Gateway(None)
    for spec in (
        resolve_model("acme", api_base=server.base, model_list=specs),
        resolve_model("openai/insecure", api_base=server.base),
    ):
        assert asyncio.run(gw.complete(spec, MSG)).ok

        async def stream(s=spec) -> list[str]:
            return [p async for p in gw.stream(s, MSG, max_tokens=20)]

        assert asyncio.run(stream())
    text = log.read_text()
    assert "canary" not in text and text.count('"Authorization": "Bearer none"') == 4


def test_the_cache_is_keyed_on_the_credential(tmp_path):
    base = "http://127.0.0.1:9/v1"
    alice = resolve_model("openai/m", api_base=base, api_key="alice-key")
    bob = resolve_model("openai/m", api_base=base)
    carol = resolve_model("openai/m", api_base=base, api_key="carol-key")
    keys = {cache_key(s, MSG, {}, 0) for s in (alice, bob, carol)}
    assert len(keys) == 3
    assert cache_key(alice, MSG, {}, 0) == cache_key(
        resolve_model("openai/m", api_base=base, api_key="alice-key"), MSG, {}, 0
    )
    # run configurations (and so run ids) differ too, and hold a fingerprint, never the key
    assert alice.public()["credential"].startswith("key:") and "alice-key" not in json.dumps(alice.public())
    assert "credential" not in bob.public()
    assert "credential" not in resolve_model("organism/base").public()  # in-process: run ids unchanged


def test_builtin_names_cannot_be_shadowed(tmp_path):
    fake = {"offline/judge": ModelSpec(name="offline/judge", model="openai/evil", api_base="http://evil/v1")}
    spec = resolve_model("offline/judge", model_list=fake)
    assert spec.is_local and spec.api_base is None
    path = tmp_path / "m.yaml"
    path.write_text("model_list:\n  - model_name: organism/base\n    litellm_params: {model: openai/x}\n")
    with pytest.raises(Exception, match="built-in"):
        load_model_list(path)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("offline/judge", "built-in"),
        ("organism/base", "built-in"),
        ("openai/gpt-4o", "provider"),
        ("anthropic/claude", "provider"),
        ("acme", "alias"),
        ("taken", "another fine-tuning job"),
        ("bad name\n", "not a usable"),
        ("gpt-4o-mini", "LiteLLM already sends to openai"),  # the owner's `--model gpt-4o-mini`
        ("gemini-2.5-flash", "vertex_ai"),
        ("anthropic.claude-v2", "bedrock"),
        ("mine", "another fine-tuning job"),  # the same job id, but another user's row
        ("ft:gpt-4o-mini:me::ok", None),
        ("me/Meta-Llama-3-8B-ft", None),  # Together's fine-tune names
    ],
)
def test_registration_names(name, reason):
    conflict = policy.name_conflict(
        name,
        job_id="job-2",
        owner="bob",
        aliases={"acme": object()},
        registered=[
            {"name": "taken", "job_id": "job-1", "owner": "bob"},
            {"name": "mine", "job_id": "job-2", "owner": "alice"},
        ],
    )
    assert (conflict is None) if reason is None else (reason in conflict), conflict


def test_a_refused_registration_is_recorded_on_the_job(tmp_path):
    store = Store(tmp_path / "s.db")
    store.save_finetune_job({"id": "ftjob-1", "owner": "bob", "status": "succeeded", "model": "gpt-4o-mini"})
    row = {
        **store.get_finetune_job("ftjob-1"),
        "fine_tuned_model": "offline/judge",
        "api_base": "http://e/v1",
        "api_key_env": None,
    }
    assert finetune.register(store, row) is None
    assert store.registered_models() == []
    assert "built-in" in store.get_finetune_job("ftjob-1")["registration_error"]
    # registered models are per owner
    ok = {**row, "fine_tuned_model": "ft:x:bob::1"}
    assert finetune.register(store, ok)["owner"] == "bob"
    assert list(finetune.registered_specs(store, owner="bob", only_owner=True)) == ["ft:x:bob::1"]
    assert finetune.registered_specs(store, owner="alice", only_owner=True) == {}


def test_finetune_clients_never_fall_back_to_the_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-owner")
    assert finetune._client(None, None).api_key == "sk-owner"  # the provider's own endpoint
    assert finetune._client("http://typed/v1", None).api_key == PLACEHOLDER_KEY
    assert finetune._client("http://typed/v1", None, "sk-mine").api_key == "sk-mine"
    # the variable recorded with the job
    assert finetune._client("http://owners/v1", "OPENAI_API_KEY").api_key == "sk-owner"
    with pytest.raises(finetune.FinetuneError, match="your own API key"):  # not the owner's instead
        finetune._client(None, None, caller_key=True)
    # what a new job records: the app's typed address binds no variable; the owner's terminal does
    assert finetune.key_env_for("http://typed/v1", None, None, owner_terminal=False) is None
    assert finetune.key_env_for("http://mine/v1", None, None, owner_terminal=True) == "OPENAI_API_KEY"
    assert finetune.key_env_for(None, None, None, owner_terminal=False) == "OPENAI_API_KEY"
    assert finetune.key_env_for(None, None, "sk-mine", owner_terminal=False) is None


def test_visitor_budgets(tmp_path, local_server):
    store = Store(tmp_path / "s.db")
    limits = Policy.serve("0.0.0.0", {"AUDITOR_VISITOR_CALLS": "3", "AUDITOR_VISITOR_TOKENS": "0"}).limits
    meter = Meter(store, "visitor:abc", limits)
    assert [meter.take() for _ in range(4)][:3] == [None, None, None]
    assert "budget of 3 calls" in meter.take()
    # tokens are reserved before a call: one call that may not fit is refused whole
    tokens = Meter(
        store, "visitor:tokens", Policy.serve("0.0.0.0", {"AUDITOR_VISITOR_TOKENS": "1000"}).limits
    )
    assert tokens.take(800) is None
    assert "800 left" not in (tokens.take(300) or "") and "200 left" in tokens.take(300)
    tokens.settle(800, 100)  # the reply used less than reserved: the rest comes back
    assert tokens.take(300) is None
    assert Meter(store, "visitor:other", limits).take() is None  # per person
    with pytest.raises(PolicyError, match="0 left"):
        meter.check_estimate(1)
    # through the gateway: only calls on a server key count, and a spent budget refuses the call
    server = local_server()
    listed = ModelSpec(name="listed", model="openai/insecure", api_base=server.base, api_key_env="LISTED_KEY")
    gw = Gateway(None, meter=Meter(store, "visitor:new", limits))
    import os

    os.environ["LISTED_KEY"] = "x"
    try:
        results = [asyncio.run(gw.complete(listed, MSG)) for _ in range(4)]
        own_key = asyncio.run(gw.complete(listed.model_copy(update={"api_key": SecretStr("mine")}), MSG))
    finally:
        del os.environ["LISTED_KEY"]
    assert [r.ok for r in results] == [True, True, True, False] and "budget" in results[3].error
    assert own_key.ok  # the visitor's own key is not metered
    calls, tokens = store.spending("visitor:new", quota.today())
    assert calls == 3 and tokens > 0
    public = Policy.serve("0.0.0.0", {})
    with pytest.raises(PolicyError, match="own API key"):
        public.check_model(resolve_model("openai/gpt-4o"), typed_base=False)
    public.check_model(resolve_model("openai/gpt-4o", api_key="mine"), typed_base=False)
    public.check_model(resolve_model("openai/x", api_base="http://mine/v1"), typed_base=True)  # no server key
    public.check_model(resolve_model("open-mini", model_list=_alias_list(tmp_path)), typed_base=False)


def test_plans_from_requests_name_no_paths(tmp_path):
    with pytest.raises(AuditError, match="no such audit plan"):
        shipped_plan("/etc/passwd")
    with pytest.raises(AuditError, match="no such audit plan"):
        shipped_plan("../../auditor.db")
    assert shipped_plan("quick").probesets
    plan = parse_plan("name: x\nprobesets:\n  /etc/passwd: 1\n", "upload")
    with pytest.raises(AuditError, match="not a shipped probe set"):
        check_plan(plan, Policy.serve("0.0.0.0", {}), models=1, shipped_only=True)
    with pytest.raises(AuditError, match="upload line 3"):
        parse_plan("name: x\nprobesets: [\n", "upload")
    with pytest.raises(AuditError, match="whole number"):
        parse_plan("probesets:\n  em-core: lots\n", "upload")
    with pytest.raises(PolicyError, match="limit"):
        check_plan(parse_plan("probesets:\n  em-core: 10000000\n", "upload"), Policy.cli(), models=2)
    one = check_plan(load_plan("standard"), Policy.cli(), models=1)
    assert one > 1_000 and check_plan(load_plan("standard"), Policy.cli(), models=2) == 2 * one


def test_visitors_are_told_apart_by_address_and_only_a_trusted_proxy_may_say_otherwise():
    plain = Policy.serve("0.0.0.0", {})
    assert plain.visitor("1.2.3.4", None) != plain.visitor("5.6.7.8", None)
    assert plain.visitor("1.2.3.4", "9.9.9.9") == plain.visitor("1.2.3.4", None)  # a header anyone can send
    space = Policy.serve("0.0.0.0", {"SYSTEM": "spaces"})  # one proxy, which appends the client's address
    assert space.visitor("10.0.0.1", "9.9.9.9") == space.visitor("10.0.0.2", "9.9.9.9")
    # what the client writes to the left of it changes nothing: no fresh budget, no one else's identity
    assert space.visitor("10.0.0.1", "1.1.1.1, 9.9.9.9") == space.visitor("10.0.0.1", "2.2.2.2, 9.9.9.9")
    two = Policy.serve("0.0.0.0", {"AUDITOR_TRUST_PROXY": "2"})
    assert two.visitor("p", "evil, 9.9.9.9, 10.0.0.1") == two.visitor("p", "9.9.9.9, 10.0.0.1")
    assert "1.2.3.4" not in plain.visitor("1.2.3.4", None)  # a hash, not the address


@pytest.mark.parametrize(
    "model", ["vertex_ai/gemini-pro", "bedrock/anthropic.claude-v2", "azure/gpt-4o", "sagemaker/x"]
)
def test_ambient_credential_providers_never_go_to_a_typed_api_base(model):
    """Their credentials (service accounts, AWS keys, Azure AD) come from the environment whatever
    key is passed, so no mode of the app sends them to an address a request typed."""
    for mode_host, env in (("127.0.0.1", {}), ("0.0.0.0", {}), ("0.0.0.0", {"AUDITOR_AUTH": "a:b"})):
        rules = Policy.serve(mode_host, env)
        with pytest.raises(PolicyError, match="openai/MODEL"):
            rules.check_model(resolve_model(model, api_base="http://evil/v1", api_key="k"), typed_base=True)
    Policy.serve("127.0.0.1", {}).check_model(resolve_model(model), typed_base=False)  # its own endpoint


def test_an_unprefixed_name_is_judged_by_where_litellm_sends_it(monkeypatch):
    """``gemini-2.5-flash`` goes to Vertex AI (ambient credentials), a bare name at Groq's address to
    Groq with GROQ_API_KEY from the environment, whatever key is given: server credentials both."""
    rules = Policy.serve("0.0.0.0", {})
    with pytest.raises(PolicyError, match="openai/MODEL"):
        rules.check_model(
            resolve_model("gemini-2.5-flash", api_base="http://evil/v1", api_key="k"), typed_base=True
        )
    with pytest.raises(PolicyError, match="own API key"):  # at Vertex's own endpoint: the owner's credentials
        rules.check_model(resolve_model("gemini-2.5-flash", api_key="junk"), typed_base=False)
    monkeypatch.setenv("GROQ_API_KEY", "gsk-owner-canary")
    groq = resolve_model("llama3", api_base="https://api.groq.com/openai/v1", api_key="mine")
    assert credentials.credential(groq, groq.api_base).kind == "ambient"
    with pytest.raises(PolicyError):
        rules.check_model(groq, typed_base=True)


def test_the_command_line_resolves_only_the_owners_registered_models(tmp_path):
    from argparse import Namespace

    from auditor.cli.options import read_model_list

    db = tmp_path / "s.db"
    store = Store(db)
    for owner, name in (
        (None, "ft:x:owner::1"),
        ("alice", "ft:x:alice::2"),
        ("visitor:abc", "ft:x:visitor::3"),
    ):
        store.save_finetune_job({"id": f"job-{name}", "owner": owner, "status": "succeeded", "model": "m"})
        row = {
            **store.get_finetune_job(f"job-{name}"),
            "fine_tuned_model": name,
            "api_base": "http://x/v1",
            "api_key_env": None,
        }
        assert finetune.register(store, row) is not None
    assert set(read_model_list(Namespace(db=str(db), models=None))) == {"ft:x:owner::1"}


def test_a_provider_cannot_answer_with_another_jobs_id(tmp_path, monkeypatch, finetune_dataset):
    from types import SimpleNamespace

    store = Store(tmp_path / "s.db")
    store.save_finetune_job({"id": "ftjob-alice", "owner": "alice", "status": "running", "model": "m"})

    class Hostile:  # answers every create with Alice's job id
        files = SimpleNamespace(create=lambda **kw: SimpleNamespace(id="file-1"))
        fine_tuning = SimpleNamespace(
            jobs=SimpleNamespace(create=lambda **kw: SimpleNamespace(id="ftjob-alice", status="queued"))
        )

    monkeypatch.setattr(finetune, "_client", lambda *a, **k: Hostile())
    with pytest.raises(finetune.FinetuneError, match="already holds"):
        finetune.submit(
            store, finetune_dataset, "gpt-4o-mini-2024-07-18", api_base="http://evil/v1", owner="bob"
        )
    assert store.get_finetune_job("ftjob-alice")["owner"] == "alice"


def test_long_jobs_are_bounded_per_person_shared_fairly_and_cancelled_when_nobody_follows(tmp_path):
    import threading
    import time

    from auditor import jobs

    release = threading.Event()

    def hold(job):  # like a run: it stops when cancelled
        while not (release.is_set() or job.cancel.is_set()):
            time.sleep(0.02)

    def start(owner, work=hold):
        return jobs.start("probe", owner, Gateway(None), work, per_owner=2, total=3)

    a = [start("visitor:a") for _ in range(4)]  # two run, two wait: a's own limit
    assert [j.waiting for j in a] == [False, False, True, True]
    with pytest.raises(PolicyError, match="limit is 2 running"):
        start("visitor:a")
    b = start("visitor:b")  # a's jobs leave room: b starts at once
    assert not b.waiting
    c = start("visitor:c")  # the pool is full: c waits, ahead of a's waiting jobs
    assert c.waiting
    print("a: 2 running, 2 waiting, 5th refused; b started at once; c waits in a full pool of 3")

    def follower(job):
        with jobs.following(job):
            while not job.done:
                yield job.id

    gen = follower(b)
    next(gen)
    gen.close()  # b's client went away: b is cancelled, its slot goes to c (fewest running), not a
    assert b.cancel.is_set() and not a[0].cancel.is_set()
    deadline = time.monotonic() + 10
    while c.waiting and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not c.waiting and a[2].waiting and a[3].waiting
    jobs.cancel(a[3])  # a waiting job cancelled never runs
    assert a[3].done and a[3].thread is None
    release.set()
    for j in a[:3] + [c]:
        assert j.finished.wait(10)


def test_a_handler_following_a_job_sees_it_end_at_once():
    """``jobs.wait`` returns when the job ends, not at the end of its wait: a job's result is
    shown as soon as it is there (a handler used to sleep its whole progress interval)."""
    import asyncio
    import threading
    import time

    from auditor import jobs

    release = threading.Event()
    job = jobs.start("probe", None, Gateway(None), lambda job: release.wait(10))

    async def follow() -> tuple[bool, float, bool, float]:
        started = time.monotonic()
        early = await jobs.wait(job, 0.2)  # still running: the wait runs out
        waited = time.monotonic() - started
        threading.Timer(0.1, release.set).start()
        started = time.monotonic()
        ended = await jobs.wait(job, 30)
        return early, waited, ended, time.monotonic() - started

    early, waited, ended, took = asyncio.run(follow())
    assert not early and 0.15 < waited < 5, waited
    assert ended and took < 5, took
    assert asyncio.run(jobs.wait(job, 30))  # an ended job: at once
    print(f"a running job: wait gave up after {waited:.2f} s; the job ended: seen {took:.2f} s later")


def _entry_list(tmp_path, body: str):
    path = tmp_path / "entries.yaml"
    path.write_text("model_list:\n" + body)
    return load_model_list(path)


def test_an_entrys_own_routing_and_headers_stay_with_the_entry(tmp_path, monkeypatch):
    """An entry that routes itself (custom_llm_provider, extra headers...) is the owner's
    configuration: a server credential, refused toward a typed base, and its parameters never
    follow a visitor's API base."""
    monkeypatch.setenv("WATSONX_TOKEN", "owner-watsonx-token")
    specs = _entry_list(
        tmp_path,
        "  - model_name: granite\n"
        "    litellm_params: {model: ibm/granite, custom_llm_provider: watsonx}\n"
        "  - model_name: headed\n"
        "    litellm_params:\n"
        "      model: openai/x\n"
        "      api_base: http://owner/v1\n"
        "      extra_headers: {X-Owner-Token: secret}\n",
    )
    granite = resolve_model("granite", model_list=specs)
    assert credentials.credential(granite, None).kind == "ambient" and credentials.uses_server_key(granite)
    moved = resolve_model("headed", api_base="http://evil/v1", model_list=specs)
    assert moved.extra == {} and credentials.credential(moved, moved.api_base).kind == "placeholder"
    local = Policy.serve("127.0.0.1", {})
    with pytest.raises(PolicyError, match="openai/MODEL"):
        local.check_model(granite.model_copy(update={"api_base": "http://evil/v1"}), typed_base=True)


def test_public_visitors_get_only_the_entries_listed_for_them(tmp_path):
    specs = _entry_list(
        tmp_path,
        "  - model_name: internal-vllm\n"
        "    litellm_params: {model: openai/x, api_base: http://10.0.0.5:8000/v1}\n"
        "  - model_name: listed\n"
        "    litellm_params: {model: openai/y, api_base: http://10.0.0.6:8000/v1}\n"
        "    model_info: {public: true}\n",
    )
    public = Policy.serve("0.0.0.0", {})
    for key in (None, "anything"):
        with pytest.raises(PolicyError, match="does not offer"):
            public.check_model(
                resolve_model("internal-vllm", api_key=key, model_list=specs), typed_base=False
            )
    public.check_model(resolve_model("listed", model_list=specs), typed_base=False)
    Policy.serve("0.0.0.0", {"AUDITOR_AUTH": "a:b"}).check_model(
        resolve_model("internal-vllm", model_list=specs), typed_base=False
    )  # team users may


def test_the_command_line_sends_no_environment_key_to_a_stored_address(tmp_path, monkeypatch):
    """A registered model made at an address a user typed: the owner's `auditor run --model NAME`
    sends it no key (owner_terminal covers only an --api-base typed at that terminal)."""
    from argparse import Namespace

    from auditor.cli.options import read_model_list, resolve_role

    monkeypatch.setenv("OPENAI_API_KEY", "sk-owner")
    db = tmp_path / "s.db"
    store = Store(db)
    store.save_finetune_job({"id": "job-1", "owner": None, "status": "succeeded", "model": "m"})
    row = {
        **store.get_finetune_job("job-1"),
        "fine_tuned_model": "ft:x::1",
        "api_base": "http://typed/v1",
        "api_key_env": None,
    }
    finetune.register(store, row)
    args = Namespace(db=str(db), models=None, model="ft:x::1", api_base=None, api_key=None)
    spec = resolve_role(args, "model", read_model_list(args))
    assert spec.api_base == "http://typed/v1" and spec.key(spec.api_base) == PLACEHOLDER_KEY
    typed = resolve_role(Namespace(model="openai/x", api_base="http://mine/v1", api_key=None), "model", None)
    assert typed.key("http://mine/v1") is None  # LiteLLM sends OPENAI_API_KEY there: the owner typed it


def test_replies_without_usage_still_count_against_the_budget(tmp_path):
    store = Store(tmp_path / "s.db")
    meter = Meter(store, "visitor:x", Policy.serve("0.0.0.0", {}).limits)
    gw = Gateway(None, meter=meter)
    messages = [{"role": "user", "content": "a" * 400}]
    reserved = quota.reserved_tokens(messages, 100)
    assert meter.take(reserved) is None
    gw._settle(reserved, messages, 0, reply_chars=400)  # the provider reported 0 tokens
    assert store.spending("visitor:x", quota.today())[1] == quota.reserved_tokens(messages, 0) + 101


def test_every_x_forwarded_for_line_counts(monkeypatch):
    """A proxy may add its hop as a second header line: the client's own first line decides nothing."""
    from types import SimpleNamespace

    from starlette.datastructures import Headers

    from ui.app import App

    app = App.__new__(App)
    app.rules, app.auth_enabled = Policy.serve("0.0.0.0", {"AUDITOR_TRUST_PROXY": "1"}), False

    def visitor(*lines):
        headers = Headers(raw=[(b"x-forwarded-for", line.encode()) for line in lines])
        return app.principal(SimpleNamespace(headers=headers, client=SimpleNamespace(host="10.0.0.1")))

    assert visitor("1.1.1.1", "9.9.9.9") == visitor("2.2.2.2", "9.9.9.9") == visitor("9.9.9.9")


# -- part 2: addresses, logins, visitors ------------------------------------------------------


def test_typed_api_bases_are_http_and_on_a_public_instance_public():
    public = Policy.serve("0.0.0.0", {})
    refused = [
        "http://127.0.0.1:8000/v1",
        "http://localhost:8000/v1",
        "http://10.1.2.3/v1",
        "http://192.168.0.10/v1",
        "http://172.16.0.1/v1",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/v1",
        "http://0.0.0.0:8000/v1",
        "http://[::1]:8000/v1",
        "http://[::ffff:127.0.0.1]:8000/v1",
        "http://[fe80::1]/v1",
        "http://2130706433/v1",
        "http://0x7f000001/v1",
        "http://does-not-resolve.invalid/v1",
    ]
    messages = set()
    for base in refused:
        with pytest.raises(PolicyError) as e:
            public.check_base(base)
        messages.add(str(e.value))
    assert messages == {netguard.REFUSED_BASE}  # one message, whatever is at the address
    for base in ("file:///etc/passwd", "ftp://example.com/", "javascript:alert(1)", "localhost:8000", ""):
        with pytest.raises(PolicyError, match="http:// or https://"):
            public.check_base(base)
    assert netguard.is_public_ip("93.184.216.34") and netguard.is_public_ip("2606:4700::1111")
    local = Policy.serve("127.0.0.1", {})
    local.check_base("http://127.0.0.1:8000/v1")  # local and team keep private addresses
    Policy.serve("0.0.0.0", {"AUDITOR_AUTH": "a:b"}).check_base("http://10.0.0.1/v1")
    Policy.serve("0.0.0.0", {"AUDITOR_ALLOW_PRIVATE_BASES": "1"}).check_base("http://10.0.0.1/v1")
    print(f"public: {len(refused)} private or unresolvable bases refused with one message")


def test_the_connection_guard_refuses_private_addresses_as_it_connects(local_server):
    """A base that passed the check but leads to a private address when connecting (a redirect,
    a DNS answer that changed): the guard refuses the connection itself."""
    import socket

    from auditor.netguard import BlockedAddress, public_net_only

    server = local_server()
    spec = ModelSpec(name="x", model="openai/insecure", api_base=server.base, api_key=SecretStr("k"))
    gw = Gateway(None)
    guarded = asyncio.run(gw.complete(spec.model_copy(update={"public_net": True}), MSG))
    assert not guarded.ok and guarded.error == netguard.REFUSED_BASE and guarded.attempts == 1
    assert server.stats()["requests"] == 0
    assert asyncio.run(gw.complete(spec, MSG)).ok  # the same spec unguarded (local, team, owner's)
    with public_net_only(), pytest.raises(BlockedAddress), socket.socket() as s:
        s.connect(("127.0.0.1", 9))
    print(f"guarded call: {guarded.error[:60]!r}..., the server saw 0 requests")


def test_failed_logins_are_throttled_per_user_and_per_address():
    clock = [0.0]
    th = quota.LoginThrottle(10, 60, clock=lambda: clock[0])
    for _ in range(10):
        assert th.wait("alice", "a1") == 0
        th.failed("alice", "a1")
    assert th.wait("alice", "a1") == 60  # this user, this address
    assert th.wait("alice", "a2") == 60  # this user from anywhere
    assert th.wait("bob", "a1") == 60  # anyone from this address
    assert th.wait("bob", "a2") == 0
    clock[0] = 59.9
    assert th.wait("alice", "a1") > 0
    clock[0] = 60.0
    assert th.wait("alice", "a1") == 0  # waiting out the window always works
    th.failed("alice", "a1")
    th.succeeded("alice", "a1")
    assert th.wait("alice", "a9") == 0


def test_published_runs_are_seen_by_everyone_and_the_rest_by_their_owner(tmp_path, capsys):
    from auditor.cli import commands as cli

    store = Store(tmp_path / "s.db")
    for run_id, owner in (("run-a", "visitor:a"), ("run-b", "visitor:b"), ("run-o", None)):
        store.save_run(
            {
                "id": run_id, "kind": "probe", "status": "complete", "model": "m", "probeset": "p",
                "config": {}, "config_hash": run_id, "seed": 0, "n_planned": 1, "owner": owner,
            }
        )  # fmt: skip
    assert [r["id"] for r in store.list_runs(owner="visitor:a", only_owner=True)] == ["run-a"]
    assert cli.main(["runs", "publish", "run-o", "--db", str(tmp_path / "s.db")]) == 0
    assert "published 1: run-o" in capsys.readouterr().out
    assert {r["id"] for r in store.list_runs(owner="visitor:a", only_owner=True)} == {"run-a", "run-o"}
    assert {r["id"] for r in store.list_runs(owner="visitor:b", only_owner=True)} == {"run-b", "run-o"}
    assert cli.main(["runs", "publish", "run-x", "--db", str(tmp_path / "s.db")]) == 2
    assert "nothing was published" in capsys.readouterr().err


def test_a_public_visitor_is_their_cookie_and_counted_by_their_address(tmp_path):
    from types import SimpleNamespace

    from ui.app import App

    app = App(tmp_path / "s.db", rules=Policy.serve("0.0.0.0", {}))

    def req(cookie=None, host="203.0.113.1"):
        return SimpleNamespace(
            cookies={"auditor_visitor": cookie} if cookie else {},
            headers={},
            client=SimpleNamespace(host=host),
            username=None,
        )

    a = app.owner(req("cookie-a"))
    assert a == app.owner(req("cookie-a", host="198.51.100.9"))  # the same browser, another address
    assert a != app.owner(req("cookie-b")) and "cookie-a" not in a
    assert app.owner(req()) != app.owner(req())  # no cookie: nobody who comes back
    assert app.principal(req("cookie-a")) == app.principal(req("cookie-b"))  # limits go by address
    local = App(tmp_path / "l.db", rules=Policy.serve("127.0.0.1", {}))
    assert local.owner(req("cookie-a")) is None and not local.private


def test_a_visitors_fine_tuned_model_keeps_to_public_addresses(tmp_path, local_server):
    """A registered model keeps the address its job was made at, which a visitor typed: it is
    checked like a typed base, and guarded as it connects, although nobody types it now."""
    from types import SimpleNamespace

    import gradio as gr

    from ui.app import App

    server = local_server()
    app = App(tmp_path / "s.db", rules=Policy.serve("0.0.0.0", {}))
    request = SimpleNamespace(
        cookies={"auditor_visitor": "c1"}, headers={}, client=SimpleNamespace(host="203.0.113.1")
    )
    owner = app.owner(request)
    for name, base in (("ft:mine-private", server.base), ("ft:mine-public", "http://93.184.216.34/v1")):
        app.store.register_model(
            {"name": name, "model": f"openai/{name}", "api_base": base, "api_key_env": None, "owner": owner}
        )
    with pytest.raises(gr.Error, match="public internet addresses"):
        app.spec("ft:mine-private", request=request)
    assert app.spec("ft:mine-public", request=request).public_net  # guarded as it connects
    assert not app.spec("organism/base", request=request).public_net


def test_a_stream_that_connects_late_is_guarded_too(local_server):
    """Some providers (Gemini) open the connection only when the first chunk is asked for."""
    from auditor.models import ModelError

    server = local_server()
    spec = ModelSpec(
        name="g",
        model="gemini/gemini-2.0-flash",
        api_base=server.root,
        api_key=SecretStr("k"),
        public_net=True,
    )

    async def reply():
        return [p async for p in Gateway(None).stream(spec, MSG)]

    with pytest.raises(ModelError) as e:
        asyncio.run(reply())
    assert str(e.value) == netguard.REFUSED_BASE
    assert server.stats()["requests"] == 0
