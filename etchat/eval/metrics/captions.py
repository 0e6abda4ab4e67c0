"""Caption metrics of pycocoevalcap: the PTB tokenizer, BLEU-1..4, METEOR, ROUGE-L and CIDEr (plus sentence
similarity), as the official E.T. Bench and dense-captioning evaluations compute them, and the segment overlap and
stand-in caption those evaluations share. The PTB tokenizer and METEOR are Java programs, so Java must be on PATH."""

from __future__ import annotations

import random
import shutil
import string
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from etchat.eval.metrics.meteor import Meteor
from etchat.eval.metrics.similarity import SentenceSimilarity

# The keys of `CaptionScorers.score`, in the order the reports list them.
CAPTION_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SentSim")
JAVA_HINT = "install a Java runtime, e.g. `apt-get install -y default-jre-headless`"

# One caption set: pycocoevalcap's (references, hypotheses), ``refs[k]`` a list of references and ``hyps[k]`` a list
# holding the one hypothesis of item k.
CaptionSet = tuple[dict, dict]


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

    Same Java command and punctuation list as ``pycocoevalcap.tokenizer.ptbtokenizer``, but each distinct text is
    tokenized once (lines are tokenized independently), the temporary file goes to the system temp folder (not into
    site-packages) and the tokenizer's progress line is silenced.
    """
    from pycocoevalcap.tokenizer import ptbtokenizer

    distinct = list(dict.fromkeys(t.replace("\n", " ") for t in texts))
    if not distinct:
        return []
    jar_dir = Path(ptbtokenizer.__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        text_file = Path(tmp) / "captions.txt"
        text_file.write_bytes("\n".join(distinct).encode())
        command = [require_java(), "-cp", ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR]
        command += ["edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", str(text_file)]
        result = subprocess.run(command, cwd=jar_dir, capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"the PTB tokenizer failed: {result.stderr.decode(errors='replace').strip()}")
    lines = result.stdout.decode().split("\n")
    lines += [""] * (len(distinct) - len(lines))  # the official script raises KeyError on a missing trailing line
    punctuation = set(ptbtokenizer.PUNCTUATIONS)
    tokenized = {
        text: " ".join(w for w in line.rstrip().split(" ") if w not in punctuation)
        for text, line in zip(distinct, lines)
    }
    return [tokenized[t.replace("\n", " ")] for t in texts]


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


def match_captions(proposals, events, tiou: float, rng: random.Random) -> list[tuple[str, str]]:
    """(proposal sentence, event sentence) for every event a proposal overlaps at IoU >= tiou, or (sentence, random
    caption) for a proposal that overlaps none; ``proposals`` and ``events`` are (segment, sentence) pairs, and the
    random captions are drawn in proposal order, as both official dense-captioning evaluations draw them."""
    pairs = []
    for segment, sentence in proposals:
        matched = [(sentence, event) for event_segment, event in events if caption_iou(segment, event_segment) >= tiou]
        pairs += matched or [(sentence, random_caption(rng))]
    return pairs


def count_covered(segments, event_segments, tiou: float) -> tuple[int, int]:
    """(segments overlapping some event, events overlapped by some segment) at IoU > tiou (strict), the counts behind
    the official dense-captioning precision and recall."""
    covered_segments, covered_events = set(), set()
    for i, segment in enumerate(segments):
        for j, event_segment in enumerate(event_segments):
            if caption_iou(segment, event_segment) > tiou:
                covered_segments.add(i)
                covered_events.add(j)
    return len(covered_segments), len(covered_events)


def _set_key(caption_set: CaptionSet) -> tuple:
    refs, hyps = caption_set
    return tuple((tuple(hyps[k]), tuple(refs[k])) for k in refs)


class CaptionScorers:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr and (given a `SentenceSimilarity`) sentence similarity of caption sets, e.g.
    one video's caption pairs.

    ``score_sets`` scores many sets in one go: each distinct set once, each distinct pair's METEOR statistics and each
    distinct sentence's embedding once, METEOR (Java) working while Python computes the other metrics. METEOR runs
    as one Java process for the whole evaluation (given, or started by ``start()`` or on first use); call
    ``close()``.
    """

    def __init__(self, similarity: SentenceSimilarity | None = None, meteor: Meteor | None = None):
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge

        self.java = require_java()
        self.similarity = similarity
        self.bleu, self.rouge, self.cider = Bleu(4), Rouge(), Cider()
        self._meteor = meteor  # closed by close()
        self.metrics = CAPTION_METRICS if similarity is not None else CAPTION_METRICS[:-1]

    def start(self) -> None:
        """Start METEOR's Java process now (it loads for several seconds while other work goes on)."""
        if self._meteor is None:
            self._meteor = Meteor(self.java)

    @property
    def meteor(self) -> Meteor:
        self.start()
        return self._meteor

    def _scores_without_meteor(self, refs: dict, hyps: dict) -> dict[str, float]:
        bleu, _ = self.bleu.compute_score(refs, hyps, verbose=0)
        scores = {f"Bleu_{n + 1}": bleu[n] for n in range(4)}
        scores["ROUGE_L"], _ = self.rouge.compute_score(refs, hyps)
        scores["CIDEr"], _ = self.cider.compute_score(refs, hyps)
        if self.similarity is not None:
            keys = list(refs)
            scores["SentSim"] = self.similarity.mean_paired([refs[k][0] for k in keys], [hyps[k][0] for k in keys])
        return scores

    def score_sets(self, caption_sets: Sequence[CaptionSet]) -> list[dict[str, float]]:
        """The metrics of each non-empty set, keyed as `self.metrics`."""
        distinct = {}
        for caption_set in caption_sets:
            distinct.setdefault(_set_key(caption_set), caption_set)
        meteor_sets = [[(hyp[0], refs) for hyp, refs in key] for key in distinct]
        with ThreadPoolExecutor(max_workers=1) as pool:
            meteor_scores = pool.submit(self.meteor.set_scores, meteor_sets)
            if self.similarity is not None:
                texts = (text for refs, hyps in distinct.values() for k in refs for text in (refs[k][0], hyps[k][0]))
                self.similarity.prepare(texts)
            results = {key: self._scores_without_meteor(*caption_set) for key, caption_set in distinct.items()}
            for scores, (meteor, _) in zip(results.values(), meteor_scores.result()):
                scores["METEOR"] = meteor
        return [{metric: results[_set_key(s)][metric] for metric in self.metrics} for s in caption_sets]

    def score(self, refs: dict[int, list[str]], hyps: dict[int, list[str]]) -> dict[str, float]:
        return self.score_sets([(refs, hyps)])[0]

    def meteor_segments(self, refs: dict[int, list[str]], hyps: dict[int, list[str]]) -> list[float]:
        """METEOR of each (hypothesis, references) pair on its own."""
        _, segments = self.meteor.compute_score(refs, hyps)
        return segments

    def close(self) -> None:
        if self._meteor is not None:
            self._meteor.close()
            self._meteor = None
