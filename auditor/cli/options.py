"""What the commands share: their options (the store, the model-list file, the model roles),
reading those options back, ``--param`` values, progress lines on stderr, and :class:`CliError`.

A role is ``model`` (the finetune under audit), ``judge`` or ``baseline``; each is named with
``--ROLE`` and reached with ``--ROLE-api-base`` and ``--ROLE-api-key`` (the target's are plain
``--api-base`` and ``--api-key``). :func:`add_role` writes those options the same way for every
command; :func:`resolve_role` turns them into a :class:`~auditor.models.ModelSpec`.
"""

from __future__ import annotations

import argparse
import sys

from .. import config
from ..errors import AuditorError

_ROLE_HELP = {
    "model": "LiteLLM model string or model-list alias (e.g. organism/insecure)",
    "judge": "judge model (default: $AUDITOR_JUDGE, else the offline judge)",
    "baseline": "the model the finetune started from (same options apply)",
    "proposer": "a model that reads the elicited answers and proposes candidate triggers (offline/proposer: "
    "the rule-based one)",
}


class CliError(AuditorError):
    """A problem to report on one line of stderr, with a non-zero exit."""


def add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="PATH", help="SQLite store (default: $AUDITOR_DB, else ./auditor.db)")


def add_models(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models",
        metavar="FILE",
        help="model-list file in LiteLLM's proxy format (default: $AUDITOR_MODELS)",
    )


def add_role(
    p: argparse.ArgumentParser,
    role: str,
    *,
    required: bool = False,
    help: str | None = None,
    key: bool = True,
) -> None:
    """``--ROLE``, ``--ROLE-api-base`` and (with ``key``) ``--ROLE-api-key``."""
    prefix = "" if role == "model" else f"{role}-"
    p.add_argument(f"--{role}", required=required, help=help or _ROLE_HELP[role])
    p.add_argument(f"--{prefix}api-base", help=f"API base URL of the {role} (OpenAI-compatible servers)")
    if key:
        p.add_argument(
            f"--{prefix}api-key", help=f"API key of the {role} (prefer the provider's environment variable)"
        )


def add_judge(p: argparse.ArgumentParser, *, panel: bool = True) -> None:
    """``--judge`` (repeatable: a panel), its address and key, and how it gives its numbers."""
    p.add_argument(
        "--judge",
        action="append" if panel else None,
        metavar="MODEL",
        help=_ROLE_HELP["judge"] + ("; name several for a panel" if panel else ""),
    )
    p.add_argument("--judge-api-base", help="API base URL of the judge (every judge of a panel)")
    p.add_argument(
        "--judge-api-key", help="API key of the judge (prefer the provider's environment variable)"
    )
    p.add_argument(
        "--judge-mode",
        choices=["logprobs", "sampling", "text"],
        help="how the judge gives its 0-100 numbers (default: detected once per judge model and remembered)",
    )
    p.add_argument(
        "--judge-samples", type=int, default=10, metavar="N", help="sampling mode: answers per score (10)"
    )
    p.add_argument(
        "--judge-max-tokens",
        type=int,
        default=2048,
        metavar="N",
        help="text mode (reasoning judges): the first completion budget, raised fourfold while it runs out (2048)",
    )
    if panel:
        p.add_argument(
            "--panel-reduce",
            choices=["mean", "median"],
            default="mean",
            help="a panel's score: the mean or the median of its judges' (mean)",
        )


def judge_options(args):
    """The :class:`~auditor.judge.JudgeOptions` of ``add_judge``'s options."""
    from ..judge import JudgeOptions

    try:
        return JudgeOptions(
            mode=args.judge_mode,
            samples=args.judge_samples,
            text_tokens=args.judge_max_tokens,
            max_text_tokens=max(32768, args.judge_max_tokens),
        )
    except ValueError as e:
        raise CliError(f"judge options: {e.errors()[0]['loc'][0]}: {e.errors()[0]['msg']}") from None


def resolve_judge(args, model_list):
    """The judge, or the panel's judges (a list), of ``--judge`` (default ``$AUDITOR_JUDGE``, else
    the offline judge)."""
    from ..models import resolve_model

    names = args.judge if isinstance(args.judge, list) else [args.judge] if args.judge else []
    names = names or [config.settings().judge]
    specs = [
        resolve_model(
            name,
            api_base=args.judge_api_base,
            api_key=args.judge_api_key,
            model_list=model_list,
            owner_terminal=True,
        )
        for name in names
    ]
    return specs[0] if len(specs) == 1 else specs


def resolve_role(args, role: str, model_list):
    """The model of one role from its options (the judge defaults to ``$AUDITOR_JUDGE``, else the
    offline judge). On the command line the owner is at their own terminal: environment keys may
    go to an ``--api-base`` of theirs (SECURITY.md)."""
    from ..models import resolve_model

    name = getattr(args, role, None)
    if role == "judge":
        name = name or config.settings().judge
    if not name:
        return None
    prefix = "" if role == "model" else f"{role}_"
    return resolve_model(
        name,
        api_base=getattr(args, f"{prefix}api_base", None),
        api_key=getattr(args, f"{prefix}api_key", None),
        model_list=model_list,
        owner_terminal=True,
    )


def open_store(args):
    """The store of ``--db``, else the default one."""
    from ..store import Store

    return Store(args.db) if getattr(args, "db", None) else Store()


def read_model_list(args):
    """Aliases from the model-list file, and the models that the owner's fine-tuning jobs made
    (those of the command line and of a local app; the app's users and visitors have their own)."""
    from ..finetune.jobs import registered_specs
    from ..models import default_model_list_path, load_model_list

    path = getattr(args, "models", None) or default_model_list_path()
    specs = registered_specs(open_store(args), owner=None, only_owner=True)
    specs.update(load_model_list(path) if path else {})
    return specs or None


def parse_params(items: list[str]) -> dict[str, str]:
    """``--param NAME=VALUE`` options as a dict."""
    out = {}
    for item in items:
        if "=" not in item:
            raise CliError(f"--param {item!r}: write NAME=VALUE")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def to_stderr(line: str) -> None:
    """A progress line or a note, on stderr at once."""
    print(line, file=sys.stderr, flush=True)
