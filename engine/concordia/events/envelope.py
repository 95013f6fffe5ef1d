"""The CloudEvents 1.0 envelope every Concordia event travels in (structured-mode JSON).

Context attributes: the four CloudEvents requires (``id``, ``source``, ``specversion``,
``type``) plus ``time``, which Concordia always sets and requires because journals and
timers order by it. ``data`` is JSON (``datacontenttype: application/json``). The event's
taxonomy version travels in ``dataschema`` as ``urn:concordia:event:<type>:v<version>``;
producers that cannot set ``dataschema`` may send the ``dataversion`` extension instead.
``correlationid`` and ``causationid`` are extension attributes (CloudEvents extension
names are lowercase letters and digits only, hence no underscore).

``id`` must be a UUID: Concordia mints UUIDv7 (time-ordered), and accepts any UUID
version from other producers so that their ids still deduplicate in the inbox.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

from concordia.errors import EventError
from concordia.ids import is_uuid, new_id
from concordia.timestamps import format_timestamp, parse_timestamp, utc_now
from concordia.values import text_fault

SPECVERSION: Final = "1.0"
JSON_CONTENT_TYPE: Final = "application/json"
DATASCHEMA_PREFIX: Final = "urn:concordia:event:"

# Attribute names the CloudEvents spec defines (structured JSON mode), and Concordia's.
_CORE = ("specversion", "id", "source", "type", "time", "datacontenttype", "dataschema",
         "subject", "data")
_OURS = ("correlationid", "causationid", "dataversion")
_EXTENSION_NAME_RE = re.compile(r"[a-z0-9]+")
_DATASCHEMA_RE = re.compile(r"urn:concordia:event:(?P<type>[^\s:]+):v(?P<version>[1-9]\d{0,9})")
# Taxonomy versions are at most 2**31 - 1, as the definitions' schema says.
MAX_VERSION = 2**31 - 1
# The longest each string attribute may be (characters). Attributes are journaled with
# every event; ``source`` with ``id`` keys the inbox, and a key must stay well inside what
# a database index entry holds (about 2,700 bytes in PostgreSQL); ``type`` and the
# correlation and causation ids are names and ids like a saga's and a run's; ``subject``,
# ``dataschema`` and string extensions hold any real URI or identifier in a kilobyte.
MAX_SOURCE = 256
MAX_NAME = 200
MAX_ATTRIBUTE = 1024
_LIMITS = {"source": MAX_SOURCE, "type": MAX_NAME, "correlationid": MAX_NAME,
           "causationid": MAX_NAME}
_EVENT_TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]*")
ExtensionValue = str | int | bool


@dataclass(frozen=True, slots=True)
class Envelope:
    """One CloudEvents 1.0 event. Build it with :func:`new_event` or :meth:`from_dict`."""

    id: str
    source: str
    type: str
    time: str
    data: Any = None
    specversion: str = SPECVERSION
    datacontenttype: str = JSON_CONTENT_TYPE
    dataschema: str | None = None
    subject: str | None = None
    correlationid: str | None = None
    causationid: str | None = None
    # Further extension attributes, carried through untouched.
    extensions: Mapping[str, ExtensionValue] = field(
        default_factory=lambda: MappingProxyType({}))

    def __hash__(self) -> int:
        # The generated hash would fail on the (mutable) data; the id identifies an event.
        return hash(self.id)

    @property
    def version(self) -> int | None:
        """The taxonomy version of the payload, from ``dataschema`` or ``dataversion``."""
        if self.dataschema is not None:
            match = _DATASCHEMA_RE.fullmatch(self.dataschema)
            if match is not None:
                return int(match.group("version"))
        raw = self.extensions.get("dataversion")
        return _int_version(raw) if raw is not None else None

    @property
    def correlation_id(self) -> str | None:
        return self.correlationid

    @property
    def causation_id(self) -> str | None:
        return self.causationid

    @property
    def timestamp(self) -> datetime:
        return parse_timestamp(self.time)

    def to_dict(self) -> dict[str, Any]:
        """Structured-mode JSON: attributes at the top level, absent ones left out."""
        out: dict[str, Any] = {
            "specversion": self.specversion,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": self.time,
            "datacontenttype": self.datacontenttype,
        }
        for name in ("dataschema", "subject", "correlationid", "causationid"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out.update(self.extensions)
        out["data"] = self.data
        return out

    @classmethod
    def from_dict(cls, raw: Any) -> Envelope:
        """Read a structured-mode event; raise :class:`EventError` naming every bad
        attribute (``field`` is the first of them)."""
        envelope, problems = read_envelope(raw)
        if envelope is None:
            event_type = raw.get("type") if isinstance(raw, Mapping) else None
            raise EventError("; ".join(p.text() for p in problems),
                             event_type=event_type if isinstance(event_type, str) else None,
                             field=problems[0].attribute or None)
        return envelope


@dataclass(frozen=True, slots=True)
class AttributeProblem:
    """One thing wrong with an envelope: the attribute ("" for the whole) and why."""

    attribute: str
    message: str

    def text(self) -> str:
        return f"attribute {self.attribute!r}: {self.message}" if self.attribute else (
            self.message)


def read_envelope(raw: Any) -> tuple[Envelope | None, list[AttributeProblem]]:
    """The envelope ``raw`` describes, or None and every problem with it (each once)."""
    if not isinstance(raw, Mapping):
        return None, [AttributeProblem("", f"an event must be a JSON object, not {_kind(raw)}")]
    problems: list[AttributeProblem] = []

    def fail(attribute: str, message: str) -> None:
        problems.append(AttributeProblem(attribute, message))

    for name in ("specversion", "id", "source", "type", "time"):
        if name not in raw or raw[name] is None:
            fail(name, "required attribute is missing")
    specversion = raw.get("specversion")
    if specversion is not None and specversion != SPECVERSION:
        fail("specversion", f"{_short(specversion)} is not supported; "
                            f"only CloudEvents {SPECVERSION!r} is")
    if raw.get("id") is not None and not is_uuid(raw["id"]):
        fail("id", f"{_short(raw['id'])} is not a UUID "
                   "(e.g. 01938f6e-7c1a-7cc2-9b6e-3f2d4c5b6a79)")
    source = _string(raw, "source", fail)
    type_ = _string(raw, "type", fail)
    if type_ is not None and not _EVENT_TYPE_RE.fullmatch(type_):
        fail("type", f"{_short(type_)} is not an event type name "
                     "(letters, digits, '.', '_' and '-')")
        type_ = None
    time = _string(raw, "time", fail)
    if time is not None:
        try:
            parse_timestamp(time)
        except ValueError as exc:
            fail("time", str(exc) if len(time) <= 60 else f"{_short(time)} is not an RFC 3339 "
                                                          "date-time")
    content_type = raw.get("datacontenttype", JSON_CONTENT_TYPE)
    if content_type is None:
        content_type = JSON_CONTENT_TYPE
    if not isinstance(content_type, str) or not is_json_media_type(content_type):
        fail("datacontenttype", f"{_short(content_type)} is not supported; "
                                "event data must be application/json")
    if "data_base64" in raw:
        fail("data_base64", "binary data is not supported; send JSON in 'data'")
    optional: dict[str, str | None] = {}
    for name in ("dataschema", "subject", "correlationid", "causationid"):
        value = raw.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            fail(name, f"must be a non-empty string, not {_short(value)}")
            value = None
        elif value is not None and (fault := _text_fault(name, value)) is not None:
            fail(name, fault)
            value = None
        optional[name] = value
    dataschema = optional["dataschema"]
    if dataschema is not None and dataschema.startswith(DATASCHEMA_PREFIX):
        match = _DATASCHEMA_RE.fullmatch(dataschema)
        if match is None or int(match.group("version")) > MAX_VERSION:
            fail("dataschema", f"{_short(dataschema)} is not of the form "
                               f"{DATASCHEMA_PREFIX}<type>:v<version>")
        elif type_ is not None and match.group("type") != type_:
            fail("dataschema", f"names event type {match.group('type')!r} but the "
                               f"event's type is {type_!r}")
    extensions = _extensions(raw, fail)
    if "dataversion" in extensions:
        version = _int_version(extensions["dataversion"])
        if version is None:
            fail("dataversion", f"{_short(extensions['dataversion'])} is not a "
                                "positive integer version")
        else:
            from_schema = _schema_version(dataschema)
            if from_schema is not None and from_schema != version:
                fail("dataversion", f"says version {version} but dataschema says "
                                    f"version {from_schema}")
    if problems or source is None or type_ is None or time is None:
        return None, problems
    return Envelope(
        id=raw["id"], source=source, type=type_, time=time, data=raw.get("data"),
        datacontenttype=content_type, dataschema=dataschema,
        subject=optional["subject"], correlationid=optional["correlationid"],
        causationid=optional["causationid"],
        extensions=MappingProxyType(extensions),
    ), []


def named_event(raw: Any, problems: Sequence[AttributeProblem]) -> tuple[str, int | None] | None:
    """The event type and version that an envelope with ``problems`` still names soundly,
    so that its payload can be checked in the same pass as its attributes; None when the
    type or the version is among what is wrong."""
    if not isinstance(raw, Mapping):
        return None
    if {p.attribute for p in problems} & {"", "type", "dataschema", "dataversion"}:
        return None
    type_ = raw.get("type")
    if not isinstance(type_, str):
        return None
    version = _schema_version(raw.get("dataschema") if isinstance(raw.get("dataschema"), str)
                              else None)
    dataversion = raw.get("dataversion")
    if version is None and isinstance(dataversion, str | int):
        version = _int_version(dataversion)
    return type_, version


def _extensions(raw: Mapping[str, Any], fail: Callable[[str, str], None]
                ) -> dict[str, ExtensionValue]:
    extensions: dict[str, ExtensionValue] = {}
    for name, value in raw.items():
        if name in _CORE or name in ("correlationid", "causationid"):
            continue
        if not isinstance(name, str) or not _EXTENSION_NAME_RE.fullmatch(name):
            hint = _extension_hint(name)
            fail(_short(name).strip("'") if isinstance(name, str) else str(name),
                 "not a CloudEvents attribute, and extension attribute names are "
                 "lowercase letters and digits only" + hint)
            continue
        if value is None:  # CloudEvents: a null attribute is an absent one
            continue
        if isinstance(value, float) or not isinstance(value, str | int | bool):
            fail(name, f"extension values must be strings, integers or booleans, "
                       f"not {_kind(value)}")
            continue
        if isinstance(value, str) and (fault := _text_fault(name, value)) is not None:
            fail(name, fault)
            continue
        extensions[name] = value
    return extensions


def dataschema_for(event_type: str, version: int) -> str:
    """The ``dataschema`` URN that names one version of one event type."""
    return f"{DATASCHEMA_PREFIX}{event_type}:v{version}"


def new_event(
    type: str,
    data: Any,
    *,
    source: str,
    version: int | None = None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    subject: str | None = None,
    time: datetime | None = None,
    extensions: Mapping[str, ExtensionValue] | None = None,
) -> Envelope:
    """A new event with a fresh UUIDv7 id and the current time.

    Without ``correlation_id`` the event starts a new conversation and correlates with
    itself (its own id), so every event always carries one.
    """
    if not source:
        raise EventError("attribute 'source': must be a non-empty URI-reference",
                         event_type=type, field="source")
    if not _EVENT_TYPE_RE.fullmatch(type):
        raise EventError(f"attribute 'type': {type!r} is not an event type name",
                         event_type=type, field="type")
    if version is not None and version < 1:
        raise EventError(f"version must be a positive integer, not {version}",
                         event_type=type, field="dataschema")
    extra = dict(extensions or {})
    for name in extra:
        if name in _CORE or name in _OURS or not _EXTENSION_NAME_RE.fullmatch(name):
            raise EventError(f"extension attribute {name!r}: reserved, or not lowercase "
                             "letters and digits only", event_type=type, field=name)
    event_id = new_id()
    return Envelope(
        id=event_id,
        source=source,
        type=type,
        time=format_timestamp(time or utc_now()),
        data=data,
        dataschema=dataschema_for(type, version) if version is not None else None,
        subject=subject,
        correlationid=correlation_id or event_id,
        causationid=causation_id,
        extensions=MappingProxyType(extra),
    )


def _string(raw: Mapping[str, Any], name: str, fail: Callable[[str, str], None]) -> str | None:
    value = raw.get(name)
    if value is None:
        return None  # reported as missing
    if not isinstance(value, str) or not value.strip():
        fail(name, f"must be a non-empty string, not {_short(value)}")
        return None
    fault = _text_fault(name, value)
    if fault is not None:
        fail(name, fault)
        return None
    return value


def _text_fault(name: str, value: str) -> str | None:
    """Why attribute ``name``'s text cannot be taken (too long, or not text the journal
    keeps: see :func:`concordia.values.text_fault`), or None."""
    limit = _LIMITS.get(name, MAX_ATTRIBUTE)
    if len(value) > limit:
        return f"{len(value)} characters; at most {limit}"
    return text_fault(value)


def _int_version(raw: ExtensionValue) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw if 1 <= raw <= MAX_VERSION else None
    if raw.isdigit() and raw.isascii() and not raw.startswith("0") and len(raw) <= 10:
        return int(raw) if int(raw) <= MAX_VERSION else None
    return None


def _schema_version(dataschema: str | None) -> int | None:
    match = _DATASCHEMA_RE.fullmatch(dataschema) if dataschema else None
    return int(match.group("version")) if match else None


def is_json_media_type(value: str) -> bool:
    """Whether a Content-Type names JSON (``application/json`` or ``application/*+json``)."""
    media = value.split(";", 1)[0].strip().lower()
    return media == JSON_CONTENT_TYPE or (media.startswith("application/")
                                          and media.endswith("+json"))


def _extension_hint(name: object) -> str:
    if not isinstance(name, str):
        return ""
    folded = re.sub(r"[^a-z0-9]", "", name.lower())
    if folded in (*_CORE, *_OURS) or _EXTENSION_NAME_RE.fullmatch(folded):
        return f" (did you mean {folded!r}?)"
    return ""


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(
        type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
