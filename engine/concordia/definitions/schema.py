"""The shipped JSON Schemas (Draft 2020-12) and their compiled validators."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any, Literal

import jsonschema_rs
from jsonschema import Draft202012Validator

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
    return jsonschema_rs.Draft202012Validator(schema_document(kind))
