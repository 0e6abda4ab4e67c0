"""The version of the code that produced a file: ``etchat.__version__`` plus the git commit of a checkout.

``project_version()`` is ``"0.1.0+g<12 hex>"`` when the package runs from a git checkout, with ``.dirty`` appended
when tracked files differ from that commit, and plain ``"0.1.0"`` otherwise (an installed copy, or no git). Run records
(docs/design.md §13) and scores carry it so that a number can be traced to the code that made it.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from etchat import __version__

PACKAGE_ROOT = Path(__file__).resolve().parent
GIT_TIMEOUT_S = 10


def _git(*args: str) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(
            ["git", "-C", str(PACKAGE_ROOT.parent), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S
        )
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=1)
def project_version() -> str:
    """``__version__``, plus ``+g<commit>[.dirty]`` from a git checkout (computed once per process)."""
    head = _git("rev-parse", "--short=12", "HEAD")
    if head is None or head.returncode != 0 or not head.stdout.strip():
        return __version__
    # Only this package's own tracked files decide "dirty": a changed README does not change a number.
    status = _git("status", "--porcelain", "--untracked-files=no", "--", str(PACKAGE_ROOT))
    dirty = status is not None and status.returncode == 0 and bool(status.stdout.strip())
    return f"{__version__}+g{head.stdout.strip()}{'.dirty' if dirty else ''}"
