"""Imported first by every bench script, so that `python bench/X.py` works as `python -m bench.X` does.

Run as a file, Python puts the script's own folder, bench/, at ``sys.path[0]``; there `bench/api.py` shadows the
`api` package (and any script could shadow another). This swaps that entry for the project root, where the
packages are. `bench` itself is importable in both forms through the project's editable install.
"""

import sys
from pathlib import Path

_BENCH = Path(__file__).resolve().parent
if sys.path and Path(sys.path[0] or ".").resolve() == _BENCH:
    sys.path[0] = str(_BENCH.parent)
