"""Which entry of a step's catch table takes an error: pure, given the error and its details.

An entry's ``errors`` list matches an error by any of: ``*`` (every error); a class name
in the raised exception's class hierarchy (``ConnectionError`` takes a
``ConnectionResetError``), plain or module-qualified, compared and never imported; the
error's ``type`` or ``title`` as its problem details give them; its ``status`` code
(``404`` or ``"404"``). Entries are tried in order; the first that matches takes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from concordia.definitions.models import CatchClause
from concordia.runtime.retry import error_names


def matching_entry(table: Sequence[CatchClause], error: BaseException,
                   problem: dict[str, Any]) -> int | None:
    """The index of the first entry of ``table`` that takes ``error``, or None."""
    if not table:
        return None
    names = error_names(error)
    names.update(v for v in (problem.get("type"), problem.get("title")) if isinstance(v, str))
    status = problem.get("status")
    for index, clause in enumerate(table):
        for wanted in clause.errors:
            if isinstance(wanted, int):
                if wanted == status:
                    return index
            elif wanted == "*" or wanted in names or (
                    status is not None and wanted == str(status)):
                return index
    return None
