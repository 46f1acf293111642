"""Errors that reach the user as one line.

Every library-level failure a user can cause (a bad spec, an unknown space,
an unparseable budget, a missing file) raises :class:`BnhwError` or one of its
subclasses.  The CLI prints ``error: <message>`` and exits non-zero; it never
shows a traceback for these.
"""

from __future__ import annotations


class BnhwError(Exception):
    """A user-facing error; its message is printed on one line."""

    exit_code = 2


class SpecError(BnhwError, ValueError):
    """An architecture spec is malformed; the message names the field."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}" if field else message)


class BudgetError(BnhwError, ValueError):
    """A budget string could not be parsed."""
