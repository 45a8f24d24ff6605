"""Options shared by the commands: the store, the model-list file, and the model roles.

A role is ``model`` (the finetune under audit), ``judge`` or ``baseline``; each is named with
``--ROLE`` and reached with ``--ROLE-api-base`` and ``--ROLE-api-key`` (the target's are plain
``--api-base`` and ``--api-key``). :func:`add_role` writes those options the same way for every
command; :func:`resolve_role` turns them into a :class:`~auditor.models.ModelSpec`.
"""

from __future__ import annotations

import argparse

from .. import config

_ROLE_HELP = {
    "model": "LiteLLM model string or model-list alias (e.g. organism/insecure)",
    "judge": "judge model (default: $AUDITOR_JUDGE, else the offline judge)",
    "baseline": "the model the finetune started from (same options apply)",
}


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
