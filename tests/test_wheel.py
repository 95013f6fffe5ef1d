"""The wheel users install: the engine alone (no reference domain beside it), with the
files it reads at run time — py.typed, the JSON Schemas, the page's static files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

ENGINE = Path(ROOT, "engine", "concordia")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("dist")
    # Built from a copy: setuptools writes build/ and the egg-info into the tree it builds,
    # and another process (a second test worker, an install) may be building here too.
    source = tmp_path_factory.mktemp("source") / "tree"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "site", "*.egg-info", "__pycache__"))
    # Without build isolation: the dev tools bring setuptools, and no download is needed.
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                    "--outdir", str(out), str(source)], check=True, capture_output=True,
                   timeout=300)
    [path] = out.glob("concordia_sagas-*.whl")
    return zipfile.ZipFile(path)


def test_the_only_top_level_package_is_concordia(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert {t for t in tops if not t.endswith((".dist-info", ".data"))} == {"concordia"}


def test_it_holds_the_files_read_at_run_time(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert "concordia/py.typed" in names
    for path in [*ENGINE.glob("definitions/schemas/*.json"), *ENGINE.glob("service/static/*")]:
        assert path.relative_to(ENGINE.parent).as_posix() in names, path


def test_its_metadata_names_the_distribution_and_the_command(wheel: zipfile.ZipFile) -> None:
    [metadata] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    text = wheel.read(metadata).decode()
    assert "\nName: concordia-sagas\n" in text
    assert "\nRequires-Python: >=3.11\n" in text
    [entry_points] = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "concordia = concordia.cli:main" in wheel.read(entry_points).decode()
