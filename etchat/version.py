"""The project's version string: the package version, plus the git commit when run from a checkout."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

PACKAGE_VERSION = "0.1.0"  # the fallback when the package is not installed (keep equal to setup.py)


def package_version() -> str:
    try:
        return metadata.version("etchat")
    except metadata.PackageNotFoundError:
        return PACKAGE_VERSION


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def project_version() -> str:
    """``0.1.0+g<12 hex of the commit>`` (``.dirty`` when tracked files differ from it), or ``0.1.0`` outside a
    checkout."""
    version = package_version()
    commit = _git("rev-parse", "--short=12", "HEAD")
    if not commit:
        return version
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return f"{version}+g{commit}{'.dirty' if dirty else ''}"
