"""Generated candidate families: small generators, described in
``probesets/triggers/generated.yaml``, that write thousands of candidate triggers no list holds
(emoji and symbol blocks, wide year ranges, a large name list in several header formats, tag shapes,
runs of repeated characters). A family's size is known before the sweep starts (it is the length of
what it generates, :func:`sizes`), and its ``misses`` text is what the sweep's report says the family
did not cover.

A generated family is a mapping with one of:

- ``generator: codepoints`` with ``blocks`` (``[first, last]`` code point ranges) and ``categories``
  (Unicode general categories kept, default ``[So]``): one candidate per assigned code point, as this
  Python's Unicode database knows them;
- ``generator: repeats`` with ``units`` (strings) and ``length``: each unit repeated up to ``length``
  characters, so that any shorter run of it is inside the candidate (the shrinker finds the run that
  fires);
- ``generator: tags`` with ``shapes`` (``a`` a lower-case letter, ``A`` an upper-case one, ``9`` a digit,
  ``x`` a hex digit, anything else itself), ``per_shape`` and ``seed``: random-looking tags of those
  shapes (a sample: a particular random tag is found by elicitation or mining, not by chance);

or the library's own form (``candidates``, or ``phrasings`` x ``values``), where a value list may be
``{file: NAME}``, a word list shipped in ``probesets/words/`` (one item per line, ``#`` comments).
"""

from __future__ import annotations

import random
import re
import string
import unicodedata
from functools import cache

from . import probesets
from .errors import AuditorError

GENERATORS = ("codepoints", "repeats", "tags")
_WORD_FILE = re.compile(r"^[a-z0-9][a-z0-9_-]*\.txt$")


class FamilyError(AuditorError):
    pass


def generate(name: str, family: dict) -> list[str]:
    """The texts of a ``generator:`` family, in a fixed order."""
    kind = family.get("generator")
    if kind == "codepoints":
        return _codepoints(name, family)
    if kind == "repeats":
        return _repeats(name, family)
    if kind == "tags":
        return _tags(name, family)
    raise FamilyError(f"family {name}: unknown generator {kind!r}; use one of {', '.join(GENERATORS)}")


def word_list(name: str, spec: dict) -> list[str]:
    """A shipped word list (``{file: names.txt}``): only plain file names in ``probesets/words/``,
    never a path (a library file never opens anything else)."""
    file = str(spec.get("file", ""))
    if not _WORD_FILE.match(file):
        raise FamilyError(f"family {name}: word list {file!r} must be a plain .txt name in probesets/words/")
    return list(_read_words(file))


@cache
def _read_words(file: str) -> tuple[str, ...]:
    path = probesets.shipped_dir() / "words" / file
    if not path.is_file():
        raise FamilyError(f"{path}: word list missing from this installation")
    lines = path.read_text(encoding="utf-8").splitlines()
    return tuple(dict.fromkeys(ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")))


def _codepoints(name: str, family: dict) -> list[str]:
    cats = set(family.get("categories") or ["So"])
    out = []
    for block in family.get("blocks") or []:
        try:
            lo, hi = (int(b) for b in block)
        except (TypeError, ValueError):
            raise FamilyError(f"family {name}: blocks are [first, last] code points, got {block!r}") from None
        for cp in range(lo, hi + 1):
            ch = chr(cp)
            if unicodedata.name(ch, None) and unicodedata.category(ch) in cats:
                out.append(ch)
    return out


def _repeats(name: str, family: dict) -> list[str]:
    length = int(family.get("length", 32))
    units = [str(u) for u in family.get("units") or []]
    if not units or length < 2:
        raise FamilyError(f"family {name}: repeats need 'units' and a 'length' of at least 2")
    return [(u * (length // len(u) + 1))[:length] for u in units if u]


_SHAPE = {
    "a": string.ascii_lowercase,
    "A": string.ascii_uppercase,
    "9": string.digits,
    "x": "0123456789abcdef",
}


def _tags(name: str, family: dict) -> list[str]:
    shapes = [str(s) for s in family.get("shapes") or []]
    per_shape = int(family.get("per_shape", 10))
    seed = family.get("seed", 0)
    out = []
    for shape in shapes:
        rng = random.Random(f"{seed}:{shape}")  # each shape's sample is stable on its own
        for _ in range(per_shape):
            out.append("".join(rng.choice(_SHAPE[ch]) if ch in _SHAPE else ch for ch in shape))
    return out


def sizes(families: dict[str, dict]) -> dict[str, int]:
    """How many candidates each family adds (after dropping texts an earlier family had)."""
    from .triggers import expand_family  # noqa: PLC0415  (triggers calls back into this module)

    seen: set[str] = set()
    out = {}
    for name, family in families.items():
        texts = [c.text for c in expand_family(name, family)]
        out[name] = len({t for t in texts if t not in seen})
        seen.update(texts)
    return out
