"""The version of the code that produced a file: ``etchat.__version__`` plus the git commit of a checkout
(``"0.1.0+g<12 hex>"``, with ``.dirty`` when this package's tracked files differ from it; plain ``"0.1.0"`` for an
installed copy or without git)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from etchat import __version__

PACKAGE_ROOT = Path(__file__).resolve().parent


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(PACKAGE_ROOT.parent), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def project_version() -> str:
    head = _git("rev-parse", "--short=12", "HEAD")
    if not head:
        return __version__
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no", "--", str(PACKAGE_ROOT)))
    return f"{__version__}+g{head}{'.dirty' if dirty else ''}"
