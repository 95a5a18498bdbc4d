"""Child-process entry: ``python -m benchmarks._worker MODULE TOOL PARAMS.json RESULT.json``.

Imports ``benchmarks.MODULE``, calls ``measure(TOOL, params)`` and writes its JSON result. Nothing else
runs here, so every measurement starts with cold caches and its own imports.
"""

from __future__ import annotations

import faulthandler
import importlib
import json
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    faulthandler.enable()  # a crash in native code prints every thread's stack to standard error
    module_name, tool, params_path, result_path = argv
    module = importlib.import_module(f"benchmarks.{module_name}")
    params = json.loads(Path(params_path).read_text())
    result = module.measure(tool, params)
    Path(result_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
