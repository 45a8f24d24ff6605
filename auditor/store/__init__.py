"""The store: the only package that touches SQLite. :mod:`.migrations` is the schema,
:mod:`.store` the :class:`Store` (every write), :mod:`.queries` every read, :mod:`.rows` the typed
rows of the per-call tables."""

from .migrations import migrations
from .rows import JudgementRow, ResponseRow
from .store import PUBLISHED, Store, default_path, now

__all__ = ["PUBLISHED", "JudgementRow", "ResponseRow", "Store", "default_path", "migrations", "now"]
