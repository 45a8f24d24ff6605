"""One base class for every problem the auditor reports to its user.

Each subclass's message says what is wrong and how to fix it (the file, line, entry and field
where there is one). The CLI prints any of them on one line and exits 2; the app shows it as a
toast. Anything else that escapes is a bug, reported with its type.
"""

from __future__ import annotations


class AuditorError(ValueError):
    """A problem the user can fix; ``str(error)`` is the whole message."""
