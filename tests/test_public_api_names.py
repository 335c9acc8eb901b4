"""`from harness import evaluate` gives the function whatever was imported before it
(importing the submodule harness.evaluate, now harness.score.evaluate, used to replace
it with the module)."""

from __future__ import annotations

import subprocess
import sys


def test_evaluate_is_the_function_after_its_module_was_imported() -> None:
    code = (
        "import harness.score.evaluate\n"
        "from harness.score.evaluate import EvalOptions\n"
        "from harness import evaluate\n"
        "import harness\n"
        "assert callable(evaluate) and evaluate.__name__ == 'evaluate', evaluate\n"
        "assert harness.evaluate is evaluate\n"
        "assert sys.modules['harness.score.evaluate'].evaluate is evaluate\n"
    )
    result = subprocess.run([sys.executable, "-c", "import sys\n" + code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
