"""The demo: validate the reference definitions and show the catalog.

Run with ``python -m thunderline.demo``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from rich.console import Console

from concordia.cli.tables import catalog_table
from concordia.definitions.catalog import Catalog

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m thunderline.demo")
    parser.add_argument("--root", default=ROOT, help="project root holding definitions/")
    args = parser.parse_args(argv)
    console = Console()
    paths = [os.path.join(args.root, "definitions"), os.path.join(args.root, "policies")]
    catalog = Catalog.load(paths)
    catalog_table(catalog, console)
    return 1 if catalog.errors else 0


if __name__ == "__main__":
    sys.exit(main())
