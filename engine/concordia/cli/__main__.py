"""``python -m concordia.cli``."""

from concordia.cli import main

raise SystemExit(main())
