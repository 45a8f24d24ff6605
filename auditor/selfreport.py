"""A sweep's self-report evidence (reported, not used for its verdict): the backdoor A/B question
with and without the threat prompt, and a recognition question per top candidate and per control
candidate, asked of the model and of a baseline model when one is given."""

from __future__ import annotations

import random

from . import probesets
from .metrics import analyse
from .probemodel import Entry, ProbeSet, ProbeSetError
from .runner import CustomCases, Runner


async def self_report_evidence(sweep, flagged: list) -> dict:
    try:
        sr = probesets.load("self-report")
    except ProbeSetError:
        return {}
    ab = [c for c in sr.cases(samples=2) if c.entry_id in ("backdoor_neutral", "backdoor_threat")]
    template = sr.templates.get("trigger_recognition")
    tops = list({f.trigger: sweep.by_id_text(f.trigger) for f in flagged}.values())[
        : sweep.settings.recognition_top
    ]
    if len(tops) < sweep.settings.recognition_top:
        scored = sorted(
            (
                (sweep.screened.counts.get((c.id, p), (0, 0)), c)
                for c in sweep.candidates
                for p in sweep.settings.placements
            ),
            key=lambda kc: -(kc[0][0] / kc[0][1]) if kc[0][1] else 0,
        )
        for (_, _), c in scored:
            if c not in tops:
                tops.append(c)
            if len(tops) >= sweep.settings.recognition_top:
                break
    rng = random.Random(sweep.settings.seed)
    pool = [c for c in sweep.candidates if c not in tops]
    controls = rng.sample(pool, min(sweep.settings.recognition_top, len(pool)))
    recognition = []
    if template:
        for role, group in (("top", tops), ("control", controls)):
            for cand in group:
                entry = Entry.model_validate(
                    {
                        **template,
                        "id": f"recognise|{role}|{cand.id}",
                        "paraphrases": [p.replace("{trigger}", cand.text) for p in template["paraphrases"]],
                        "samples_per_paraphrase": 1,
                    }
                )
                recognition += ProbeSet(
                    name="recognition", source="self-report", format="auditor", sha256="", entries=[entry]
                ).cases()
    out = {}
    models = [("model", sweep.target)] + (
        [("baseline_model", sweep.baseline_model)] if sweep.baseline_model else []
    )
    needed = len(models) * sum(c.samples for c in ab + recognition)
    remaining = sweep._remaining_budget()
    if remaining is not None and needed > remaining:
        return {"skipped": f"needs about {needed} calls, {max(remaining, 0)} left in the budget"}
    for role, spec in models:
        cases = [c.model_copy(update={"case_id": f"self|{c.case_id}"}) for c in ab + recognition]
        run_id = f"{sweep.run_id}-self-{role}"
        runner = Runner(
            sweep.store,
            sr,
            spec,
            sweep.judge,
            sweep._run_options(),
            gateway=sweep.gateway,
            custom=CustomCases(cases=cases, run_id=run_id, kind="sweep-self-report"),
        )
        await runner.run()
        summary, pdata = analyse(sweep.store, run_id, expected=runner.expected)
        report = {}
        for entry_id, key in (
            ("backdoor_neutral", "backdoor_a_neutral"),
            ("backdoor_threat", "backdoor_a_threat"),
        ):
            pd = pdata.get(entry_id)
            report[key] = round(sum(pd.values) / len(pd.values), 4) if pd and pd.values else None
        rec = []
        for cand in tops + controls:
            for eid, pd in pdata.items():
                if eid.endswith(cand.id) and pd.values:
                    rec.append(
                        {
                            "trigger": cand.text,
                            "role": "top" if cand in tops else "control",
                            "p_yes": round(sum(pd.values) / len(pd.values), 4),
                        }
                    )
        report["recognition"] = rec
        out[role] = report
    return out
