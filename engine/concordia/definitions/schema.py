"""The shipped JSON Schemas (Draft 2020-12) and their compiled validators."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

from jsonschema import Draft202012Validator

if TYPE_CHECKING:
    import jsonschema_rs

Kind = Literal["saga", "event", "policy"]
KINDS: tuple[Kind, ...] = ("saga", "event", "policy")
SCHEMA_VERSION = "v1"


@cache
def schema_document(kind: Kind) -> dict[str, Any]:
    """The JSON Schema of ``kind`` as shipped inside the package."""
    text = resources.files("concordia.definitions").joinpath(
        "schemas", f"{kind}.{SCHEMA_VERSION}.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def schema_id(kind: Kind) -> str:
    return str(schema_document(kind)["$id"])


@cache
def validator(kind: Kind) -> Draft202012Validator:
    """The jsonschema validator: slow, but its errors carry paths for located messages."""
    return Draft202012Validator(schema_document(kind))


@cache
def fast_validator(kind: Kind) -> jsonschema_rs.Draft202012Validator:
    """The compiled (Rust) validator: a yes/no answer in microseconds.

    Nearly every file CI sees is valid, so documents are checked here first and only the
    ones it refuses go through :func:`validator`, which writes the messages.
    """
    import jsonschema_rs

    return jsonschema_rs.Draft202012Validator(schema_document(kind))


# Documents a process checks with :func:`validator` before it builds the compiled one.
# The compiled library holds 10 MB of a process's resident memory once loaded (measured
# 2026-12-07), while jsonschema is resident anyway wherever runs are driven (payloads and
# policy inputs are checked with it): a worker loading its few definitions keeps one
# validator; a command checking hundreds of files builds the fast one after the first few.
FAST_AFTER = 16
_checked = 0


def is_valid(kind: Kind, data: Any) -> bool:
    """Whether ``data`` is a valid document of ``kind`` (see :data:`FAST_AFTER`)."""
    global _checked
    if _checked < FAST_AFTER and fast_validator.cache_info().currsize == 0:
        _checked += 1  # a lost update between threads only moves the switch by one
        return validator(kind).is_valid(data)
    return fast_validator(kind).is_valid(data)
