"""How the CLI tests run ``blender-llm`` as a user does: this interpreter's console script in a subprocess."""

from __future__ import annotations

import sys
from pathlib import Path

# the installed console script (else the module, which is the same app)
_SCRIPT = Path(sys.executable).with_name("blender-llm")
CLI = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "blender_core.app.cli"]
