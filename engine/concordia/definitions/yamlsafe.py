"""Safe YAML loading with limits and source marks.

PyYAML's composer builds a node tree with line/column marks; we construct plain Python
data from it ourselves so that we can (1) refuse duplicate mapping keys, which PyYAML
silently overwrites, (2) bound alias expansion ("billion laughs"), nesting depth and file
size, (3) keep a JSON-pointer → (line, column) map for every value, (4) never build
anything but JSON-like data (no tags, no objects, dates stay strings), and (5) refuse
numbers that load but cannot run: ``.nan``/``.inf`` and integers beyond what JSON
consumers read exactly (2**53 - 1), each with its line and column.

Alias expansion is bounded twice: by the number of values built (each use of an alias
counts again) and by the characters of the strings built, so one large anchored string
reused by many aliases is refused as soon as the expanded text passes the limit, long
before it is copied into messages or compared with names.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from concordia.definitions.problems import Problem, Severity

try:  # libyaml's composer is several times faster; the pure one is a fallback.
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

_POSITION_IN_BYTES = _BaseLoader.__module__ == "yaml.cyaml"
_RESOLVED: dict[tuple[str, bool], str] = {}
_RESOLVED_MAX = 50_000


class _Loader(_BaseLoader):
    """The safe loader with tag resolution cut to a dictionary lookup.

    The composer calls back into Python for the tag of every node (a regex scan per
    scalar, two path-resolver hooks per node). The safe loader has no path resolvers, so
    the hooks do nothing and a scalar's tag depends only on its text and on whether it
    was written plain; keys and common values repeat, so the answers are remembered.
    """

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: Any) -> Any:
        # Typed here because PyYAML's stubs leave BaseResolver.resolve untyped.
        resolve: Callable[[type[yaml.Node], Any, Any], str] = super().resolve
        if kind is not yaml.ScalarNode:
            return resolve(kind, value, implicit)
        key = (value, bool(implicit[0]))
        tag = _RESOLVED.get(key)
        if tag is None:
            if len(_RESOLVED) >= _RESOLVED_MAX:  # bounded: a long-lived process loads much
                _RESOLVED.clear()
            tag = _RESOLVED[key] = resolve(kind, value, implicit)
        return tag


assert not _BaseLoader.yaml_path_resolvers, "path resolvers would make resolve() contextual"

MAX_BYTES = 1_000_000
MAX_DEPTH = 64
MAX_NODES = 200_000  # counted with aliases expanded: bounds alias bombs
# Characters of scalar text (keys and values), counted with aliases expanded. Four times
# the file limit leaves room for modest reuse of anchored text and refuses a large string
# reused by many aliases after a few uses (900 KB x 2,000 aliases: after the fifth).
MAX_CHARS = 4 * MAX_BYTES
# The largest integer a JSON consumer that reads numbers as doubles keeps exactly.
MAX_SAFE_INTEGER = 2**53 - 1
# Digits (sign and `_` separators aside) above which an integer is refused before it is
# converted: Python refuses more than 4,300 digits with an exception, and nothing near
# that size is safe anyway.
_MAX_INT_TEXT = 24

_COLLECTION_TAGS: dict[type[yaml.Node], str] = {
    yaml.MappingNode: "tag:yaml.org,2002:map",
    yaml.SequenceNode: "tag:yaml.org,2002:seq",
}
# Timestamps stay the string that was written: definitions hold no datetimes.
_STRING_TAGS = frozenset({"tag:yaml.org,2002:str", "tag:yaml.org,2002:timestamp"})
_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
# The per-tag builders, called directly: SafeConstructor.construct_object would also
# remember every node it built (constructed_objects), which in a shared constructor keeps
# each document's nodes alive for the life of the process.
_constructor = yaml.constructor.SafeConstructor()
_SCALAR_BUILDERS: dict[str, Callable[[Any], Any]] = {
    "tag:yaml.org,2002:null": _constructor.construct_yaml_null,
    "tag:yaml.org,2002:bool": _constructor.construct_yaml_bool,
    "tag:yaml.org,2002:int": _constructor.construct_yaml_int,
    "tag:yaml.org,2002:float": _constructor.construct_yaml_float,
}


@dataclass(frozen=True, slots=True)
class Document:
    """A loaded YAML document: its data and where each value came from."""

    path: str
    data: Any
    marks: dict[str, tuple[int, int]]  # JSON pointer -> (line, column), 1-based

    def locate(self, pointer: str) -> tuple[int, int]:
        """The mark of ``pointer`` or, failing that, of its nearest located ancestor."""
        p = pointer
        while True:
            if p in self.marks:
                return self.marks[p]
            if not p:
                return (1, 1)
            p = p.rsplit("/", 1)[0]


class YamlLoadError(Exception):
    """A file could not be loaded as one safe YAML document."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(problem.format_text())


def _fail(path: str, code: str, message: str, line: int = 0, column: int = 0,
          hint: str | None = None, severity: Severity = "error") -> YamlLoadError:
    return YamlLoadError(Problem(code, message, path, line, column, hint=hint,
                                 severity=severity))


def too_large(path: str, size: int) -> YamlLoadError:
    """The error for a file of ``size`` bytes (its real size, not what was read of it)."""
    return _fail(path, "file-too-large", f"file is {size:,} bytes; the limit is {MAX_BYTES:,}")


def load_yaml_bytes(raw: bytes, path: str) -> Document:
    """Load one YAML document from ``raw``; raise :class:`YamlLoadError` with a location."""
    if len(raw) > MAX_BYTES:
        raise too_large(path, len(raw))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise _fail(path, "not-utf8", f"byte 0x{raw[exc.start]:02x} is not valid UTF-8",
                    line, col, hint="save the file as UTF-8") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip() or all(
        not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()
    ):
        raise _fail(path, "empty-file", "file is empty; a definition document is expected")
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        msg = f"{exc.problem or 'invalid YAML'}"
        if "maximum nesting depth" in msg:  # libyaml's own bound (1,000), far above ours
            raise _fail(path, "too-deep", f"nesting deeper than {MAX_DEPTH} levels",
                        line, col) from None
        if exc.context:
            msg = f"{exc.context}, {msg}"
        # An unclosed quote or bracket is reported where the file ends; the place it was
        # opened is what the author needs to find.
        start = exc.context_mark
        if (isinstance(exc, yaml.scanner.ScannerError | yaml.parser.ParserError)
                and start is not None and mark is not None and start.line != mark.line):
            msg += f" (it starts on line {start.line + 1})"
        hint = None
        if isinstance(exc, yaml.composer.ComposerError) and "single document" in msg:
            hint = "put one definition in each file"
        bad_line = text.splitlines()[line - 1] if 0 < line <= len(text.splitlines()) else ""
        if "\t" in bad_line[: max(col, 1) + 1] or "tab" in msg:
            msg = "a tab character where YAML expects indentation or a value"
            hint = "indent with spaces; YAML does not allow tabs for indentation"
        raise _fail(path, "yaml-syntax", msg, line, col, hint=hint) from None
    except yaml.reader.ReaderError as exc:  # a control character: no mark, only a position
        # libyaml counts bytes of the UTF-8 text; the pure-Python reader counts characters.
        before = (text.encode("utf-8")[: exc.position].decode("utf-8", "replace")
                  if _POSITION_IN_BYTES else text[: exc.position])
        line = before.count("\n") + 1
        col = len(before) - (before.rfind("\n") + 1) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise _fail(path, "yaml-syntax", f"character U+{code:04X} is not allowed: {exc.reason}",
                    line, col, hint="remove it, or write it as an escape inside a "
                                    "double-quoted string") from None
    except yaml.YAMLError as exc:  # e.g. several documents in one file
        raise _fail(path, "yaml-syntax", str(exc).splitlines()[0]) from None
    if node is None:
        raise _fail(path, "empty-file", "file is empty; a definition document is expected")
    marks: dict[str, tuple[int, int]] = {}
    budget = [MAX_NODES, MAX_CHARS]
    data = _construct(node, "", 0, marks, budget, path)
    return Document(path=path, data=data, marks=marks)


def read_regular_file(path: str) -> bytes:
    """The bytes of ``path`` if it is a regular file within the size limit.

    The file is opened without blocking and checked before anything is read: a FIFO or a
    device named ``*.yaml`` would otherwise block the reader or stream forever. Raises
    :class:`YamlLoadError` (code ``not-a-regular-file``, ``file-too-large`` with the
    file's real size, or ``unreadable``).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise _fail(path, "unreadable", f"cannot read file: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            # A warning: the file is left alone, and nothing in it can be wrong.
            raise _fail(path, "not-a-regular-file",
                        f"{_file_kind(info.st_mode)}, not a regular file; skipped unread",
                        severity="warning")
        if info.st_size > MAX_BYTES:
            raise too_large(path, info.st_size)
        try:
            raw = fh.read(MAX_BYTES + 1)
        except OSError as exc:
            raise _fail(path, "unreadable", f"cannot read file: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:  # grew since it was measured
        raise too_large(path, max(len(raw), os.path.getsize(path)))
    return raw


def load_yaml_file(path: str) -> Document:
    """Read and load ``path``; its kind and size are checked before anything is read."""
    return load_yaml_bytes(read_regular_file(path), path)


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a plain file"


def _construct(node: yaml.Node, pointer: str, depth: int,
               marks: dict[str, tuple[int, int]], budget: list[int], path: str) -> Any:
    # Hot path (every value of every file): plain attribute access and inlined pointer
    # building rather than helpers (problems.pointer_join's escaping only when needed).
    mark = node.start_mark
    line, col = mark.line + 1, mark.column + 1
    budget[0] -= 1
    if budget[0] < 0:
        raise _fail(path, "too-many-nodes",
                    f"document expands to more than {MAX_NODES} values "
                    "(aliases are counted each time they are used)", line, col,
                    hint="remove YAML anchors/aliases that repeat large structures")
    if depth > MAX_DEPTH:
        raise _fail(path, "too-deep", f"nesting deeper than {MAX_DEPTH} levels", line, col)
    if pointer not in marks:
        marks[pointer] = (line, col)
    tag = node.tag
    cls = type(node)
    if cls is yaml.ScalarNode:
        text = node.value
        budget[1] -= len(text)
        if budget[1] < 0:
            raise _too_much_text(path, line, col)
        if tag in _STRING_TAGS:
            return str(text)
        build = _SCALAR_BUILDERS.get(tag)
        if build is None:
            raise _fail(path, "bad-tag", f"YAML tag {tag!r} is not allowed", line, col)
        if tag == _INT_TAG:
            return _integer(build, node, path, line, col)
        value = build(node)
        if tag == _FLOAT_TAG and not math.isfinite(value):
            raise _fail(path, "bad-number", f"{_cut(text)} is not a finite number",
                        line, col, hint="JSON has no NaN or infinity; write a number")
        return value
    # Tags on collections matter as much as on scalars: `!!python/object:x {..}` is a
    # mapping node, and `!!set`/`!!omap` would otherwise pass as plain data.
    if tag != _COLLECTION_TAGS.get(cls, tag):
        raise _fail(path, "bad-tag", f"YAML tag {tag!r} is not allowed", line, col)
    depth += 1
    if cls is yaml.MappingNode:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            kmark = key_node.start_mark
            if key_node.tag == _MERGE_TAG:
                raise _fail(path, "merge-key", "YAML merge keys (<<) are not supported",
                            kmark.line + 1, kmark.column + 1)
            if type(key_node) is not yaml.ScalarNode:
                raise _fail(path, "bad-key", "mapping keys must be plain strings",
                            kmark.line + 1, kmark.column + 1)
            key = str(key_node.value)
            budget[1] -= len(key)
            if budget[1] < 0:
                raise _too_much_text(path, kmark.line + 1, kmark.column + 1)
            child = pointer + "/" + (
                key.replace("~", "~0").replace("/", "~1") if "~" in key or "/" in key else key)
            if key in out:
                first = marks.get(child, (0, 0))
                raise _fail(path, "duplicate-key",
                            f"duplicate key {key!r} (first defined on line {first[0]})",
                            kmark.line + 1, kmark.column + 1,
                            hint="YAML would silently keep only the last one")
            marks[child] = (kmark.line + 1, kmark.column + 1)
            out[key] = _construct(value_node, child, depth, marks, budget, path)
        return out
    if cls is yaml.SequenceNode:
        return [_construct(item, f"{pointer}/{i}", depth, marks, budget, path)
                for i, item in enumerate(node.value)]
    raise _fail(path, "bad-tag", f"YAML node {cls.__name__} is not allowed", line, col)


def _integer(build: Callable[[Any], Any], node: yaml.Node, path: str, line: int,
             col: int) -> int:
    digits = sum(c.isalnum() for c in node.value)
    value: int | None = None if digits > _MAX_INT_TEXT else build(node)
    if value is None or abs(value) > MAX_SAFE_INTEGER:
        what = f"an integer of {digits} digits" if value is None else _cut(node.value)
        raise _fail(path, "bad-number", f"{what} is beyond what JSON consumers read "
                    f"exactly (±{MAX_SAFE_INTEGER:,})", line, col,
                    hint="quote it if it is an identifier rather than a number")
    return value


def _too_much_text(path: str, line: int, col: int) -> YamlLoadError:
    return _fail(path, "too-many-nodes",
                 f"document expands to more than {MAX_CHARS:,} characters of text "
                 "(aliases are counted each time they are used)", line, col,
                 hint="remove YAML anchors/aliases that repeat large strings")


def _cut(text: str, limit: int = 40) -> str:
    """``text`` for a message: at most ``limit`` characters, marked when cut."""
    return text if len(text) <= limit else text[:limit] + "…"
