"""Safe YAML loading with limits and source marks.

PyYAML's composer builds a node tree with line/column marks; we construct plain Python
data from it ourselves so that we can (1) refuse duplicate mapping keys, which PyYAML
silently overwrites, (2) bound alias expansion ("billion laughs"), nesting depth and file
size, (3) keep a JSON-pointer → (line, column) map for every value, and (4) never build
anything but JSON-like data (no tags, no objects, dates stay strings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from concordia.definitions.problems import Problem, pointer_join

try:  # libyaml's composer is several times faster; the pure one is a fallback.
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

_POSITION_IN_BYTES = _Loader.__module__ == "yaml.cyaml"

MAX_BYTES = 1_000_000
MAX_DEPTH = 64
MAX_NODES = 200_000  # counted with aliases expanded: bounds alias bombs

_SCALAR_TAGS = {
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
}
_COLLECTION_TAGS: dict[type[yaml.Node], str] = {
    yaml.MappingNode: "tag:yaml.org,2002:map",
    yaml.SequenceNode: "tag:yaml.org,2002:seq",
}
_constructor = yaml.constructor.SafeConstructor()


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
          hint: str | None = None) -> YamlLoadError:
    return YamlLoadError(Problem(code, message, path, line, column, hint=hint))


def load_yaml_bytes(raw: bytes, path: str) -> Document:
    """Load one YAML document from ``raw``; raise :class:`YamlLoadError` with a location."""
    if len(raw) > MAX_BYTES:
        raise _fail(path, "file-too-large",
                    f"file is {len(raw)} bytes; the limit is {MAX_BYTES}")
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
    budget = [MAX_NODES]
    data = _construct(node, "", 0, marks, budget, path)
    return Document(path=path, data=data, marks=marks)


def load_yaml_file(path: str) -> Document:
    """Read and load ``path``; size is checked before the whole file is read."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise _fail(path, "unreadable", f"cannot read file: {exc.strerror}") from None
    return load_yaml_bytes(raw, path)


def _construct(node: yaml.Node, pointer: str, depth: int,
               marks: dict[str, tuple[int, int]], budget: list[int], path: str) -> Any:
    line, col = node.start_mark.line + 1, node.start_mark.column + 1
    budget[0] -= 1
    if budget[0] < 0:
        raise _fail(path, "too-many-nodes",
                    f"document expands to more than {MAX_NODES} values "
                    "(aliases are counted each time they are used)", line, col,
                    hint="remove YAML anchors/aliases that repeat large structures")
    if depth > MAX_DEPTH:
        raise _fail(path, "too-deep", f"nesting deeper than {MAX_DEPTH} levels", line, col)
    marks.setdefault(pointer, (line, col))
    # Tags on collections matter as much as on scalars: `!!python/object:x {..}` is a
    # mapping node, and `!!set`/`!!omap` would otherwise pass as plain data.
    if node.tag != _COLLECTION_TAGS.get(type(node), node.tag):
        raise _fail(path, "bad-tag", f"YAML tag {node.tag!r} is not allowed", line, col)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _fail(path, "merge-key", "YAML merge keys (<<) are not supported",
                            key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if not isinstance(key_node, yaml.ScalarNode):
                raise _fail(path, "bad-key", "mapping keys must be plain strings",
                            key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            key = str(key_node.value)
            kline, kcol = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            if key in out:
                first = marks.get(pointer_join(pointer, key), (0, 0))
                raise _fail(path, "duplicate-key",
                            f"duplicate key {key!r} (first defined on line {first[0]})",
                            kline, kcol, hint="YAML would silently keep only the last one")
            child = pointer_join(pointer, key)
            marks[child] = (kline, kcol)
            out[key] = _construct(value_node, child, depth + 1, marks, budget, path)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(item, pointer_join(pointer, i), depth + 1, marks, budget, path)
            for i, item in enumerate(node.value)
        ]
    assert isinstance(node, yaml.ScalarNode)
    if node.tag in _SCALAR_TAGS:
        return _constructor.construct_object(node, deep=False)
    if node.tag in ("tag:yaml.org,2002:str", "tag:yaml.org,2002:timestamp"):
        return str(node.value)
    raise _fail(path, "bad-tag", f"YAML tag {node.tag!r} is not allowed", line, col)
