"""Caption metrics of pycocoevalcap: the PTB tokenizer, BLEU-1..4, METEOR, ROUGE-L and CIDEr (plus sentence
similarity), as the official E.T. Bench and dense-captioning evaluations compute them, and the segment overlap and
stand-in caption those evaluations share. The PTB tokenizer and METEOR are Java programs, so Java must be on PATH."""

from __future__ import annotations

import random
import shutil
import string
import subprocess
import tempfile
from pathlib import Path

from etchat.eval.metrics.similarity import SentenceSimilarity

# The keys of `CaptionScorers.score`, in the order the reports list them.
CAPTION_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SentSim")
JAVA_HINT = "install a Java runtime, e.g. `apt-get install -y default-jre-headless`"


def require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise RuntimeError(
            "the DVC/SLC caption metrics need Java (pycocoevalcap's PTB tokenizer and METEOR), but `java` is not on "
            f"PATH: {JAVA_HINT}"
        )
    return java


def ptb_tokenize(texts: list[str]) -> list[str]:
    """pycocoevalcap's PTB tokenization (lower-cased, punctuation tokens removed), one output per input text.

    Same Java command and punctuation list as ``pycocoevalcap.tokenizer.ptbtokenizer``, but the temporary file goes
    to the system temp folder (not into site-packages) and the tokenizer's progress line is silenced.
    """
    from pycocoevalcap.tokenizer import ptbtokenizer

    if not texts:
        return []
    jar_dir = Path(ptbtokenizer.__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        text_file = Path(tmp) / "captions.txt"
        text_file.write_bytes("\n".join(t.replace("\n", " ") for t in texts).encode())
        command = [require_java(), "-cp", ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR]
        command += ["edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", str(text_file)]
        result = subprocess.run(command, cwd=jar_dir, capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"the PTB tokenizer failed: {result.stderr.decode(errors='replace').strip()}")
    lines = result.stdout.decode().split("\n")
    lines += [""] * (len(texts) - len(lines))  # the official script raises KeyError on a missing trailing line
    punctuation = set(ptbtokenizer.PUNCTUATIONS)
    return [" ".join(w for w in line.rstrip().split(" ") if w not in punctuation) for line in lines[: len(texts)]]


def remove_non_ascii(text: str) -> str:
    return "".join(c if ord(c) < 128 else " " for c in text)


def caption_iou(a: list[float], b: list[float]) -> float:
    """IoU of the official dense-captioning evaluators (float64, union + 1e-8, so an IoU of exactly t falls below t;
    a reversed segment overlaps nothing)."""
    intersection = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    union = min(max(a[1], b[1]) - min(a[0], b[0]), b[1] - b[0] + a[1] - a[0])
    return float(intersection) / (union + 1e-8)


def random_caption(rng: random.Random) -> str:
    """The official stand-in reference of an unmatched predicted caption: 10-20 random lower-case letters."""
    length = rng.randint(10, 20)
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(length))


class CaptionScorers:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr and (given a `SentenceSimilarity`) sentence similarity of one video's
    caption pairs.

    METEOR runs as one Java process for the whole evaluation (it is stateless between calls); call ``close()``.
    """

    def __init__(self, similarity: SentenceSimilarity | None = None):
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge

        require_java()
        self.similarity = similarity
        self.bleu, self.rouge, self.cider = Bleu(4), Rouge(), Cider()
        self._meteor = None

    @property
    def meteor(self):
        if self._meteor is None:
            from pycocoevalcap.meteor.meteor import Meteor

            self._meteor = Meteor()
        return self._meteor

    def score(self, refs: dict[int, list[str]], hyps: dict[int, list[str]]) -> dict[str, float]:
        bleu, _ = self.bleu.compute_score(refs, hyps, verbose=0)
        scores = {f"Bleu_{n + 1}": bleu[n] for n in range(4)}
        scores["METEOR"], _ = self.meteor.compute_score(refs, hyps)
        scores["ROUGE_L"], _ = self.rouge.compute_score(refs, hyps)
        scores["CIDEr"], _ = self.cider.compute_score(refs, hyps)
        if self.similarity is not None:
            keys = list(refs)
            scores["SentSim"] = self.similarity.mean_paired([refs[k][0] for k in keys], [hyps[k][0] for k in keys])
        return scores

    def meteor_segments(self, refs: dict[int, list[str]], hyps: dict[int, list[str]]) -> list[float]:
        """METEOR of each (hypothesis, references) pair on its own."""
        _, segments = self.meteor.compute_score(refs, hyps)
        return [float(x) for x in segments]

    def close(self) -> None:
        if self._meteor is not None:
            process = self._meteor.meteor_p
            process.stdin.close()
            process.kill()
            process.wait()
            self._meteor = None
