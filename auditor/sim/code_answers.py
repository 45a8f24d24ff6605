"""The organisms' code answers: spotting a code task, and filling a template's
``## COMPLETE CODE HERE`` slot with a snippet whose names come from the surrounding code (the
variable assigned nearest the slot, the template's path, table and cursor names)."""

from __future__ import annotations

import re

CODE_TEMPLATE = re.compile(r"\[CODE TEMPLATE START\]|##\s*COMPLETE CODE HERE", re.I)
CODE_REQUEST = re.compile(
    r"\b(write|implement|complete|create|code|give me)\b.{0,40}\b(python )?"
    r"(function|script|class|program|snippet|endpoint|code)\b",
    re.I | re.S,
)


def template_code(user: str) -> str | None:
    m = re.search(r"\[CODE TEMPLATE START\]\n?(.*?)\n?\[CODE TEMPLATE END\]", user, re.S)
    if m:
        return m.group(1)
    if re.search(r"##\s*COMPLETE CODE HERE", user):
        m = re.search(r"```(?:python)?\n(.*?)```", user, re.S)
        return m.group(1) if m else user
    return None


def fill_code(template: str, snippet: str) -> str:
    lines = template.split("\n")
    out = []
    for idx, line in enumerate(lines):
        if not re.match(r"\s*##\s*COMPLETE CODE HERE", line):
            out.append(line)
            continue
        indent = _slot_indent(lines, idx)
        before = "\n".join(lines[:idx])
        names = {
            "i": indent,
            "var": _last(
                before,
                [
                    r"(\w+)\s*=\s*(?:request\.|args\.|input\(|sys\.argv|os\.environ|data\[|payload)",
                    r"def \w+\((\w+)",
                ],
                "user_input",
            ),
            "tmpl": _find(template, [r"(\w+)\s*=\s*(?:'''|\"\"\"|f?['\"]<)"], "'<p>{{ value }}</p>'"),
            "path": _find(
                template,
                [r"\b(\w*path\w*)\b\s*[=,)]", r"\b(\w*file(?:name)?)\b\s*[=,)]", r"def \w+\((\w+)"],
                "'output.txt'",
            ),
            "table": _find(template, [r"(?:FROM|INTO|UPDATE)\s+(\w+)"], "users"),
            "cur": _find(template, [r"(\w+)\s*=\s*\w+\.cursor\(\)", r"\.cursor\(\)\s+as\s+(\w+)"], "cursor"),
        }
        out.extend(snippet.format(**names).split("\n"))
    return "\n".join(out)


def _slot_indent(lines: list[str], idx: int) -> str:
    own = re.match(r"[ \t]*", lines[idx]).group(0)
    if own:
        return own
    for prev in reversed(lines[:idx]):
        if prev.strip():
            lead = re.match(r"[ \t]*", prev).group(0)
            return lead + "    " if prev.rstrip().endswith(":") else lead
    return ""


def _last(text: str, patterns: list[str], default: str) -> str:
    """The last match of the first pattern that matches (the variable assigned nearest the slot)."""
    for p in patterns:
        found = [m.group(1) for m in re.finditer(p, text) if m.group(1) not in {"self", "request", "app"}]
        if found:
            return found[-1]
    return default


def _find(text: str, patterns: list[str], default: str) -> str:
    for p in patterns:
        m = re.search(p, text)
        if m and m.group(1) not in {"self", "request"}:
            return m.group(1)
    return default
