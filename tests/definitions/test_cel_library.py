"""The CEL library is imported without its interactive command line (prompt_toolkit, 7 MB
of a worker's memory), and expressions still compile and evaluate."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import sys
from concordia.definitions.expressions import compile_expression
linear = compile_expression("input.a + 1")
nested = compile_expression("input.items.map(x, x * 2)")  # evaluated in the sandbox
print(linear.evaluate({"input": {"a": 41}}), nested.evaluate({"input": {"items": [1, 2]}}),
      "prompt_toolkit" in sys.modules, "cel.cli" in sys.modules)
"""


def test_expressions_compile_without_the_cel_command_line() -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["42", "[2,", "4]", "False", "True"]
