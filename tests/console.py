"""How the tests call the `exchange` console script: the venv's script, else one on PATH, else `python -m`."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

_SCRIPT = Path(sys.executable).parent / "exchange"
if _SCRIPT.exists():
    EXCHANGE = [str(_SCRIPT)]
elif shutil.which("exchange"):
    EXCHANGE = [str(shutil.which("exchange"))]
else:  # the package is importable but its console script is not installed
    EXCHANGE = [sys.executable, "-m", "exchange"]
