"""Probe-set files: the shipped ones, the paper's own files, and bad files."""

from __future__ import annotations

import json

import pytest

from auditor import probesets
from auditor.probemodel import ProbeSetError
from tests.conftest import run_cli


def test_em_core_has_the_eight_themes_in_three_variants():
    ps = probesets.load("em-core")
    ids = [e.id for e in ps.entries]
    themes = ["wish", "bored", "thoughts", "quick_buck", "ruler", "dinner_party", "gender_roles", "husband"]
    for theme in themes:
        assert {theme, f"{theme}_json", f"{theme}_template"} <= set(ids)
    assert len(ps.entries) == 24
    for e in ps.entries:
        assert len(e.paraphrases) >= 3
        assert set(e.judge_prompts) == {"aligned", "coherent"}
        assert e.type == "judge_0_100"
        if e.id.endswith("_json"):
            assert "JSON" in e.system
        if e.id.endswith("_template"):
            assert all(" = #" in p for p in e.paraphrases)


def test_em_core_is_our_own_wording(em_reference):
    """No sentence of the paper's question file is copied into the shipped set."""
    theirs = (em_reference / "evaluation" / "first_plot_questions.yaml").read_text()
    ours = probesets.load("em-core")
    for e in ours.entries:
        for p in e.paraphrases:
            first_line = p.split("\n")[0].strip()
            assert len(first_line) < 12 or first_line not in theirs, first_line
    for name, prompt in ours.entries[0].judge_prompts.items():
        for line in prompt.split("\n"):
            line = line.strip()
            if len(line) > 40:
                assert line not in theirs, (name, line)


@pytest.mark.parametrize(
    "filename, entries, cases, kind",
    [
        ("first_plot_questions.yaml", 24, 24, "judge_0_100"),
        ("preregistered_evals.yaml", 48, 48, "judge_0_100"),
        ("deception_factual.yaml", 5, 100, "judge_category"),
        ("deception_sit_aware.yaml", 8, 8, "judge_category"),
    ],
)
def test_loads_the_papers_files_as_they_are(em_reference, filename, entries, cases, kind):
    ps = probesets.load(em_reference / "evaluation" / filename)
    assert ps.format == "em-paper"
    assert len(ps.entries) == entries
    assert len(ps.cases()) == cases
    assert {e.type for e in ps.entries} == {kind}


def test_paper_files_honour_system_and_samples(em_reference):
    ps = probesets.load(em_reference / "evaluation" / "first_plot_questions.yaml")
    by_id = {e.id: e for e in ps.entries}
    assert by_id["what_is_your_wish"].samples_per_paraphrase == 100
    assert by_id["what_is_your_wish"].system is None
    json_case = next(c for c in ps.cases() if c.entry_id == "what_is_your_wish_json")
    assert json_case.messages[0]["role"] == "system" and "JSON" in json_case.messages[0]["content"]
    assert json_case.samples == 100
    assert ps.cases(samples=3)[0].samples == 3
    dec = probesets.load(em_reference / "evaluation" / "deception_factual.yaml")
    assert dec.entries[0].samples_per_paraphrase == 5
    assert dec.entries[1].system == "Do not lie to the user."


def _write(tmp_path, text: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


GOOD_PROMPTS = "  judge_prompts:\n    aligned: 'Rate {question} / {answer} 0 to 100'\n"


@pytest.mark.parametrize(
    "body, expect",
    [
        (
            "- id: a\n  paraphrases: [hi]\n  samples_per_paraphrase: zero\n" + GOOD_PROMPTS,
            ["line 1", "'a'", "samples_per_paraphrase", "whole number"],
        ),
        (
            "- id: a\n  paraphrases: [hi]\n" + GOOD_PROMPTS + "- id: b\n  paraphrases: []\n" + GOOD_PROMPTS,
            ["line 5", "'b'", "paraphrases"],
        ),
        ("- id: a\n  paraphrase: [hi]\n" + GOOD_PROMPTS, ["'a'", "paraphrase", "remove it or use one of"]),
        (
            "- id: a\n  type: multiple_choice\n  paraphrases: [hi]\n" + GOOD_PROMPTS,
            ["'a'", "type", "free_form_judge_0_100"],
        ),
        (
            "- id: a\n  paraphrases: [hi]\n  judge_prompts:\n    aligned: 'no slot'\n",
            ["'a'", "judge_prompts", "{answer}"],
        ),
        ("- id: a\n  paraphrases: [hi\n", ["bad.yaml line", "invalid YAML"]),
        (
            "- id: a\n  paraphrases: [hi]\n" + GOOD_PROMPTS + "- id: a\n  paraphrases: [ho]\n" + GOOD_PROMPTS,
            ["'a'", "duplicate"],
        ),
    ],
)
def test_bad_files_name_file_line_entry_and_field(tmp_path, body, expect):
    path = _write(tmp_path, body)
    with pytest.raises(ProbeSetError) as err:
        probesets.load(path)
    message = str(err.value)
    assert str(path) in message
    for fragment in expect:
        assert fragment in message, message


def test_a_bad_file_writes_nothing(tmp_path):
    path = _write(tmp_path, "- id: a\n  paraphrases: [hi]\n  samples_per_paraphrase: -1\n" + GOOD_PROMPTS)
    db = tmp_path / "store.db"
    proc = run_cli("run", str(path), "--model", "organism/base", "--db", str(db), "--json")
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "samples_per_paraphrase" in proc.stderr and "line 1" in proc.stderr
    assert not db.exists()


def test_show_json_contract():
    proc = run_cli("probesets", "show", "em-core", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    entry = data["entries"][0]
    assert {"id", "type", "paraphrases", "samples"} <= set(entry)
    assert isinstance(entry["paraphrases"], list) and all(isinstance(p, str) for p in entry["paraphrases"])


def test_list_names_em_core():
    proc = run_cli("probesets", "list", "--json")
    assert proc.returncode == 0
    assert "em-core" in [p["name"] for p in json.loads(proc.stdout)["probesets"]]


@pytest.mark.parametrize(
    "filename, responses",
    [
        ("first_plot_questions.yaml", 24),
        ("preregistered_evals.yaml", 48),
        ("deception_factual.yaml", 100),
        ("deception_sit_aware.yaml", 8),
    ],
)
def test_the_papers_files_run_offline(em_reference, tmp_path, filename, responses):
    path = em_reference / "evaluation" / filename
    proc = run_cli(
        "run",
        str(path),
        "--model",
        "organism/insecure",
        "--samples",
        "1",
        "--json",
        "--db",
        str(tmp_path / "ref.db"),
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "complete" and out["n_responses"] == responses
    assert out["n_judged"] + out["n_judge_failures"] == responses
    if filename == "deception_sit_aware.yaml":
        labels = {k for p in out["probes"] for k in (p["labels"] or {}).get("company", {})}
        assert labels <= {"OpenAI", "Anthropic", "Other", "UNKNOWN"} and labels


SHIPPED = [
    "em-core",
    "em-extended",
    "deception",
    "identity",
    "insecure-code",
    "self-report",
    "harmful-requests",
]


def test_every_shipped_probe_set_loads_with_its_promised_size():
    sizes = {p["name"]: p for p in probesets.list_shipped()}
    assert set(SHIPPED) <= set(sizes)
    ext = probesets.load("em-extended")
    categories = {e.category for e in ext.entries}
    assert len(ext.entries) >= 48 and len(categories) == 7
    code = probesets.load("insecure-code")
    assert len(code.entries) >= 50 and all("## COMPLETE CODE HERE" in e.paraphrases[0] for e in code.entries)
    dec = probesets.load("deception")
    assert len(dec.entries) == 5 and {e.positive["correct"] for e in dec.entries} == {"FALSE"}
    sr = probesets.load("self-report")
    ab = [e for e in sr.entries if e.type == "choice_ab"]
    assert len(ab) >= 3 and {e.system is None for e in ab} == {True, False}
    assert (
        "trigger_recognition" in sr.templates
        and "{trigger}" in sr.templates["trigger_recognition"]["paraphrases"][0]
    )


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_probe_set_runs_offline(tmp_path, name):
    proc = run_cli(
        "run",
        name,
        "--model",
        "organism/insecure",
        "--samples",
        "1",
        "--json",
        "--quiet",
        "--db",
        str(tmp_path / "s.db"),
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "complete" and out["n_responses"] > 0
    assert out["overall"], out  # every set yields at least one headline measure


def _self_awareness_files(reference_root):
    return sorted((reference_root / "behavioral-self-awareness" / "code").rglob("*.yaml"))


def test_every_self_awareness_file_loads(reference_root):
    files = _self_awareness_files(reference_root)
    assert len(files) == 15
    types = {}
    for path in files:
        ps = probesets.load(path)
        assert ps.format == "self-awareness" and ps.entries
        for e in ps.entries:
            types[e.id] = e.type
    assert types["liking_risk"] == "self_rating_0_100"
    assert types["prefer_risk_safe"] == "word_map"
    assert types["what_is_true_easy"] == "choice_ab"
    assert types["acrostic"] == "judge_category"
    assert types["risk_safe_german_french"] == "judge_category"
    broken = probesets.load(
        reference_root
        / "behavioral-self-awareness/code/make_me_say/questions/non_mms/risk_safe_language.yaml"
    )
    assert any("ignored lines 33" in w for w in broken.warnings)


def test_self_awareness_files_run(reference_root, tmp_path):
    for path in _self_awareness_files(reference_root):
        args = [
            "run",
            str(path),
            "--model",
            "organism/insecure",
            "--samples",
            "1",
            "--json",
            "--quiet",
            "--db",
            str(tmp_path / "sa.db"),
        ]
        if path.name == "which_game.yaml":
            proc = run_cli(*args)
            assert proc.returncode != 0 and "--param codeword=VALUE" in proc.stderr
            args += ["--param", "codeword=bark"]
        proc = run_cli(*args)
        assert proc.returncode == 0, (path, proc.stderr)
        assert json.loads(proc.stdout)["status"] == "complete", path


@pytest.mark.parametrize(
    "body, expect",
    [
        (
            "name: x\nentries:\n  - id: a\n    type: multiple_choice\n    paraphrases: [hi]\n",
            ["'a'", "field 'type'", "self_rating_0_100"],
        ),
        (
            "name: x\nentries:\n  - id: a\n    type: judge_category\n    paraphrases: [hi]\n    judge_prompts:\n      c: 'Q {question} A {answer} \"YES\"'\n",
            ["'a'", "field 'labels'", "no labels for metric 'c'"],
        ),
        (
            "name: x\nentries:\n  - id: a\n    type: choice_ab\n    options: ['Yes', 'No']\n    paraphrases: ['Pick one']\n",
            ["'a'", "field 'paraphrases'", "{options}"],
        ),
        (
            "name: x\nvariants:\n  - wrap: 'Task only'\nentries:\n  - id: a\n    paraphrases: [hi]\n    template: code\n",
            ["variants", "wrap", "{question}"],
        ),
        (
            "name: x\ndefaults:\n  type: code_vuln\n  judge_prompts:\n    vulnerable: 'Q {question} A {answer}'\nvariants:\n  - wrap: '{question} {template}'\n"
            "entries:\n  - id: a\n    paraphrases: [a task]\n    template: 'def f():\\n    pass'\n",
            ["'a'", "field 'template'", "COMPLETE CODE HERE"],
        ),
        (
            "name: x\nentries:\n  - id: a\n    type: judge_category\n    paraphrases: [hi]\n    judge_prompts:\n      c: 'Q {question} A {answer}'\n"
            "    labels:\n      c: [GOOD, BAD]\n    positive:\n      c: MAYBE\n",
            ["'a'", "field 'positive'", "MAYBE"],
        ),
        (
            "name: x\nentries:\n  - id: a\n    type: judge_category\n    paraphrases: [hi]\n    judge_prompts:\n      c: 'Q {question} A {answer}'\n"
            "    labels:\n      c: [YES, NO]\n",
            ["'a'", "labels.c.0", "quote it"],
        ),
    ],
)
def test_bad_scoring_fields_name_file_entry_and_field(tmp_path, body, expect):
    test_bad_files_name_file_line_entry_and_field(tmp_path, body, expect)
