"""``python -m concordia``: the command line, as the ``concordia`` script runs it (for an
environment whose scripts directory is not on PATH)."""

import sys

from concordia.cli import main

sys.exit(main())
