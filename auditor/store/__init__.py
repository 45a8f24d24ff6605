"""The store: the only package that touches SQLite. :mod:`.migrations` is the schema,
:mod:`.store` the :class:`Store` (every write, and the reads)."""

from .migrations import migrations
from .store import PUBLISHED, Store, default_path, now

__all__ = ["PUBLISHED", "Store", "default_path", "migrations", "now"]
