"""The documentation site: every page is in the navigation, the generated pages are
current, and every code block of every page is run or checked here.

- ``yaml`` blocks load as definitions without a problem (the reference's are the schemas'
  own examples, checked key by key in test_docs.py);
- ``json`` blocks are valid event envelopes;
- ``python`` blocks run, each with the page's saga written to ``definitions/`` beside it,
  and print what their last comment says (or raise what they raise on purpose);
- ``sh`` blocks install the distribution by its own name with extras it has, or are shell
  that parses (``bash -n``) whose ``concordia`` commands use only options the command line
  has;
- ``bash`` blocks are shell that parses, run as written against a live server by
  ``tests/service/test_serve_cli.py`` (the README's serving flow, the operations guide's
  "Securing the API");
- ``mermaid`` blocks (pictures of the code) name only modules that exist.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from concordia.definitions.documents import parse_bytes
from concordia.events.envelope import Envelope
from tests.conftest import ROOT

DOCS = Path(ROOT, "docs")
PAGES = sorted(p for p in DOCS.rglob("*.md"))
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _gen_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", Path(ROOT, "scripts",
                                                                   "gen_docs.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _MkDocsLoader(yaml.SafeLoader):
    """The safe loader, taking MkDocs' ``!!python/name:`` tags as the names they are
    (never importing anything)."""


_MkDocsLoader.add_multi_constructor(
    "tag:yaml.org,2002:python/name:",
    lambda loader, suffix, node: f"python/name:{suffix}")


def _nav_pages(nav: object) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [p for item in nav for p in _nav_pages(item)]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in _nav_pages(value)]
    return []


def test_every_page_is_in_the_navigation_and_every_entry_exists() -> None:
    config = yaml.load(Path(ROOT, "mkdocs.yml").read_text(), _MkDocsLoader)
    nav = _nav_pages(config["nav"])
    assert sorted(nav) == sorted(p.relative_to(DOCS).as_posix() for p in PAGES)


def test_generated_pages_are_current() -> None:
    for path, text in _gen_docs().pages().items():
        assert path.read_text("utf-8") == text, (
            f"{path.name} is stale: python scripts/gen_docs.py")


def _blocks() -> list[tuple[str, int, str, str]]:
    out = []
    for page in PAGES:
        for i, match in enumerate(BLOCK.finditer(page.read_text("utf-8"))):
            out.append((page.relative_to(DOCS).as_posix(), i, match.group(1), match.group(2)))
    return out


BLOCKS = _blocks()


def test_every_block_names_a_language_this_test_runs() -> None:
    assert {lang for _, _, lang, _ in BLOCKS} <= {"yaml", "json", "python", "sh", "bash",
                                                  "mermaid", "text"}
    assert len(BLOCKS) > 100


def _page_saga(page: str) -> str | None:
    sagas = [b for p, _, lang, b in BLOCKS if p == page and lang == "yaml" and "steps:" in b]
    return sagas[0] if sagas else None


@pytest.mark.parametrize(("page", "index", "lang", "block"),
                         [b for b in BLOCKS if b[0] != "reference.md"],
                         ids=[f"{b[0]}-{b[1]}" for b in BLOCKS if b[0] != "reference.md"])
def test_the_block_runs(page: str, index: int, lang: str, block: str, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    if lang == "yaml" and block.lstrip().startswith("- repo:"):
        _check_hooks(block)
    elif lang == "yaml":
        parsed = parse_bytes(block.encode(), f"{page}-{index}.yaml")
        assert parsed.problems == [], [p.format_text() for p in parsed.problems]
        assert parsed.sagas or parsed.events or parsed.policies
    elif lang == "json":
        assert Envelope.from_dict(json.loads(block)).type
    elif lang == "sh":
        if block.lstrip().startswith("pip install"):
            _check_install(block)
        else:
            _check_shell(block)
    elif lang == "bash":
        _check_syntax(block)
    elif lang == "mermaid":
        _check_picture(block)
    elif lang == "text":
        _check_printed(block)
    else:
        _run_python(page, block, tmp_path, monkeypatch)


def _check_hooks(block: str) -> None:
    """A pre-commit configuration names hooks this repository declares."""
    declared = {hook["id"] for hook in yaml.safe_load(
        Path(ROOT, ".pre-commit-hooks.yaml").read_text("utf-8"))}
    named = {hook["id"] for repo in yaml.safe_load(block) for hook in repo["hooks"]}
    assert named
    assert named <= declared, f"hooks {sorted(named - declared)} are not declared"


def _check_printed(block: str) -> None:
    """Output a page quotes is output the command line prints, word for word: what
    ``concordia simulate`` says of one of the reference sagas."""
    printed = " ".join(
        subprocess.run([sys.executable, "-m", "concordia", "simulate", saga],
                       capture_output=True, text=True, check=True, cwd=ROOT).stdout
        for saga in ("user_provisioning", "upm_activation", "cerebros_nas"))
    assert " ".join(block.split()) in " ".join(printed.split()), (
        "quoted output `concordia simulate` does not print")


def _check_syntax(block: str) -> None:
    checked = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def _check_shell(block: str) -> None:
    """Shell that parses, whose ``concordia`` commands the command line takes."""
    _check_syntax(block)
    from concordia.cli import build_parser

    parser = build_parser()
    joined = block.replace("\\\n", " ")
    for line in joined.splitlines():
        words = shlex.split(line.split(" #")[0], comments=True)
        if words[:1] != ["concordia"]:
            continue
        expanded = [w if not w.startswith("$") else "value" for w in words[1:]]
        try:
            parser.parse_args(expanded)
        except SystemExit as exc:
            raise AssertionError(f"the command line refuses: {line}") from exc


def _check_picture(block: str) -> None:
    """Every node of a picture names modules or packages of the engine: its label, up to
    a parenthesis, is names separated by ``·`` (``planner.py · stage_plan.py``, ``cli ·
    service``, ``kinds/``)."""
    engine = Path(ROOT, "engine", "concordia")
    known = {p.stem for p in engine.rglob("*.py")} | {p.name for p in engine.rglob("*")
                                                      if p.is_dir()}
    labels = re.findall(r'\["([^"]+)"\]', block)
    assert labels, "the picture has no node"
    for label in labels:
        for name in label.split(" (")[0].split(" · "):
            stem = name.strip().removesuffix(".py").removesuffix("/")
            assert stem in known, f"{stem!r} in {label!r} is no module of the engine"


def _check_install(block: str) -> None:
    project = tomllib.loads(Path(ROOT, "pyproject.toml").read_text())["project"]
    commands = [ln.split("#")[0].strip() for ln in block.splitlines() if ln.strip()]
    assert commands
    for command in commands:
        match = re.fullmatch(r"pip install '?([\w.-]+)(?:\[([\w,]+)\])?'?", command)
        assert match is not None, command
        assert match.group(1) == project["name"], command
        extras = set(filter(None, (match.group(2) or "").split(",")))
        assert extras <= set(project["optional-dependencies"]), command


def _run_python(page: str, block: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saga = _page_saga(page)
    if saga is not None:
        (tmp_path / "definitions" / "sagas").mkdir(parents=True)
        (tmp_path / "definitions" / "sagas" / "saga.yaml").write_text(saga)
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    code = compile(block, f"docs/{page}", "exec")
    raises = re.search(r"^raise (\w+)\(", block, re.MULTILINE)
    with contextlib.redirect_stdout(out):
        try:
            exec(code, {"__name__": "docs"})
        except Exception as exc:  # only what the block raises on purpose
            if raises is None or type(exc).__name__ != raises.group(1):
                raise
        else:
            assert raises is None, "the block should have raised"
    printed = re.findall(r"^print\(.*# (.+)$", block, re.MULTILINE)
    if printed:
        assert out.getvalue().strip().splitlines()[-1] == printed[-1].strip()


def test_every_exported_name_is_in_the_python_api_pages() -> None:
    import concordia

    text = "\n".join(p.read_text("utf-8") for p in sorted((DOCS / "api").glob("*.md")))
    documented = set(re.findall(r"^::: concordia\.(\w+)$", text, re.MULTILINE))
    assert set(concordia.__all__) - {"__version__"} == documented - {"testing"}
