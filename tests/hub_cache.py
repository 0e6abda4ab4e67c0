"""A Hugging Face Hub cache written by hand in huggingface_hub's layout, for tests that must run offline.

<cache>/models--<org>--<name>/blobs/<etag>                 file contents
<cache>/models--<org>--<name>/snapshots/<commit>/<path>    relative symlinks to ../../blobs/<etag>
<cache>/models--<org>--<name>/refs/<branch or tag>         the commit it points at
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

# The Hub names a blob by its sha256 (LFS files) or git hash; offline nothing checks the name, so files too large to
# hash in a test (sparse ones) are named by the hash of their first MiB and their size.
HASH_LIMIT = 64 << 20


def repo_folder(cache: str | os.PathLike, repo_id: str) -> Path:
    return Path(cache) / ("models--" + repo_id.replace("/", "--"))


def etag(path: Path) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f:
        digest.update(f.read(HASH_LIMIT if size <= HASH_LIMIT else 1 << 20))
    if size > HASH_LIMIT:
        digest.update(str(size).encode())
    return digest.hexdigest()


def write_snapshot(
    cache: str | os.PathLike, repo_id: str, folder: str | os.PathLike, commit: str, refs: tuple[str, ...] = ("main",)
) -> Path:
    """Every file under `folder` as the snapshot `commit` of `repo_id` (blobs hard-linked when possible), with `refs`
    pointing at it; returns the snapshot folder."""
    repo = repo_folder(cache, repo_id)
    snapshot = repo / "snapshots" / commit
    for source in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        blob = repo / "blobs" / etag(source)
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            try:
                os.link(source, blob)
            except OSError:
                shutil.copyfile(source, blob)
        link = snapshot / source.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


def commit_hash(seed: str) -> str:
    """A 40-hex commit id (the form huggingface_hub takes for a commit rather than a branch)."""
    return hashlib.sha1(seed.encode()).hexdigest()
