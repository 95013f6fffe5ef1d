"""The safe YAML loader: same values as PyYAML's safe loader, marks, and no leftovers.

The loader builds data itself (to refuse duplicate keys and tags and to keep marks) and
remembers resolved tags; these tests pin that what it builds is what ``yaml.safe_load``
would, and that loading leaves nothing behind in the process.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
import yaml

from concordia.definitions import Catalog, yamlsafe
from concordia.definitions.yamlsafe import load_yaml_bytes
from tests.conftest import DEFINITIONS, POLICIES

SCALARS = [
    "1", "-7", "0x1f", "0o17", "1_000", "3.5", "1e3", "~", "null", "Null",
    "true", "False", "yes", "no", "on", "off", "y", "n", "'1'", '"true"', "'null'", "''",
    "plain text", "'quoted: colon'", "12:30", "1.2.3", "0777", "+1", "é", "[1, '2', no]",
]


@pytest.mark.parametrize("text", SCALARS)
def test_scalars_load_as_pyyaml_safe_load_does(text: str) -> None:
    source = f"value: {text}\nagain: {text}\n"
    expected = yaml.safe_load(source)
    for _ in range(2):  # the second time the resolved tags come from the cache
        assert load_yaml_bytes(source.encode(), "x.yaml").data == expected


def test_timestamps_stay_strings() -> None:
    data = load_yaml_bytes(b"when: 2026-11-27\nat: 2026-11-27T10:00:00Z\n", "x.yaml").data
    assert data == {"when": "2026-11-27", "at": "2026-11-27T10:00:00Z"}


def test_shipped_files_load_as_pyyaml_safe_load_does() -> None:
    for path in sorted([*Path(DEFINITIONS).rglob("*.yaml"), *Path(POLICIES).rglob("*.yaml")]):
        raw = path.read_bytes()
        assert load_yaml_bytes(raw, str(path)).data == yaml.safe_load(raw), path


def test_marks_point_at_keys_and_items() -> None:
    doc = load_yaml_bytes(b"a:\n  b: [1, 2]\n  'c/d~e': x\nlist:\n  - k: v\n", "x.yaml")
    assert doc.marks["/a"] == (1, 1)
    assert doc.marks["/a/b"] == (2, 3)
    assert doc.marks["/a/b/1"] == (2, 10)
    assert doc.marks["/a/c~1d~0e"] == (3, 3)
    assert doc.marks["/list/0"] == (5, 5)
    assert doc.marks["/list/0/k"] == (5, 5)
    assert doc.locate("/list/0/k/missing") == (5, 5)


def test_loading_keeps_no_node_alive() -> None:
    # A shared SafeConstructor remembers every node it built in construct_object; the
    # loader must not go through it, or each load leaks its documents' nodes.
    before = len(yamlsafe._constructor.constructed_objects)
    for _ in range(3):
        Catalog.load([DEFINITIONS, POLICIES])
    assert len(yamlsafe._constructor.constructed_objects) == before == 0


def test_resolved_tag_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlsafe, "_RESOLVED_MAX", 10)
    text = "\n".join(f"k{i}: v{i}" for i in range(50)).encode()
    assert load_yaml_bytes(text, "x.yaml").data["k49"] == "v49"
    assert len(yamlsafe._RESOLVED) <= 10


@pytest.mark.parametrize("enabled", [True, False])
def test_load_restores_the_garbage_collector(enabled: bool) -> None:
    was: Any = gc.isenabled()
    try:
        if not enabled:
            gc.disable()
        Catalog.load([DEFINITIONS, POLICIES, "no/such/path"])
        assert gc.isenabled() is enabled
    finally:
        if was:
            gc.enable()
