"""METEOR 1.5 as pycocoevalcap runs it (its jar, its command line, its text protocol), in one long-lived Java process.

pycocoevalcap asks the jar for the statistics of each (hypothesis, references) pair with a ``SCORE`` line and then for
the score of a set of pairs with an ``EVAL`` line holding their statistics, waiting for each answer before it sends
the next line. Here the statistics of each distinct pair are asked for once and kept, and all lines of a batch are
sent at once from a writer thread while the answers are read, so a caption set scored again at another IoU threshold
costs one ``EVAL`` line. The numbers are the jar's own: the same statistics strings in the same order give the same
score.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

Pair = tuple[str, tuple[str, ...]]  # (hypothesis, references)


def score_line(hypothesis: str, references: Sequence[str]) -> str:
    """pycocoevalcap's SCORE line: ``|||`` is removed from the hypothesis and double spaces are made single, once."""
    hypothesis = hypothesis.replace("|||", "").replace("  ", " ")
    return " ||| ".join(("SCORE", " ||| ".join(references), hypothesis))


class Meteor:
    """The METEOR jar in ``-stdio`` mode; call ``close()`` (or use it as a context manager) to stop it."""

    def __init__(self, java: str = "java"):
        from pycocoevalcap.meteor import meteor as pycoco_meteor

        jar_dir = Path(pycoco_meteor.__file__).resolve().parent
        # pycocoevalcap's command plus the serial garbage collector, which halves the process's peak memory on a
        # whole benchmark (0.6 instead of 1.2 GB); the answers do not depend on the collector.
        command = [java, "-XX:+UseSerialGC", "-jar", "-Xmx2G", pycoco_meteor.METEOR_JAR]
        command += ["-", "-", "-stdio", "-l", "en", "-norm"]
        self._stderr = tempfile.TemporaryFile()  # read only when the jar fails; a pipe nobody reads could fill up
        self._process = subprocess.Popen(
            command, cwd=jar_dir, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr
        )
        self._statistics: dict[Pair, str] = {}

    def __enter__(self) -> Meteor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _exchange(self, lines: list[str], answers_per_line: list[int]) -> list[list[str]]:
        """Send every line, return each line's answers; a writer thread keeps both pipes flowing."""
        payload = "".join(line + "\n" for line in lines).encode()
        failure: list[BaseException] = []

        def write() -> None:
            try:
                self._process.stdin.write(payload)
                self._process.stdin.flush()
            except OSError as error:  # the jar died: the reader reports it with its stderr
                failure.append(error)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        answers = []
        for count in answers_per_line:
            block = [self._process.stdout.readline() for _ in range(count)]
            if not all(block):
                writer.join()
                raise RuntimeError(f"METEOR stopped answering: {self._error_text() or failure or 'no error output'}")
            answers.append([answer.decode().strip() for answer in block])
        writer.join()
        return answers

    def _error_text(self) -> str:
        self._stderr.seek(0)
        return " ".join(self._stderr.read().decode(errors="replace").split())[-2000:]

    def statistics(self, pairs: Sequence[Pair]) -> list[str]:
        """The jar's statistics string of each pair; each distinct pair is computed once per process."""
        missing = [pair for pair in dict.fromkeys(pairs) if pair not in self._statistics]
        if missing:
            answers = self._exchange([score_line(hyp, refs) for hyp, refs in missing], [1] * len(missing))
            self._statistics.update((pair, answer[0]) for pair, answer in zip(missing, answers))
        return [self._statistics[pair] for pair in pairs]

    def set_scores(self, sets: Sequence[Sequence[Pair]]) -> list[tuple[float, list[float]]]:
        """(corpus score, per-pair scores) of each non-empty set of pairs, as ``compute_score`` gives them."""
        statistics = iter(self.statistics([pair for pairs in sets for pair in pairs]))
        lines = ["EVAL" + "".join(f" ||| {next(statistics)}" for _ in pairs) for pairs in sets]
        answers = self._exchange(lines, [len(pairs) + 1 for pairs in sets])
        return [(float(answer[-1]), [float(value) for value in answer[:-1]]) for answer in answers]

    def compute_score(self, gts: Mapping, res: Mapping) -> tuple[float, list[float]]:
        """pycocoevalcap's interface: ``gts[k]`` the references and ``res[k]`` the one hypothesis of item k."""
        if gts.keys() != res.keys():
            raise ValueError("METEOR: references and hypotheses must have the same keys")
        return self.set_scores([[(res[key][0], tuple(gts[key])) for key in gts]])[0]

    def close(self) -> None:
        self._process.kill()
        self._process.wait()
        for stream in (self._process.stdin, self._process.stdout, self._stderr):
            try:
                stream.close()
            except OSError:  # a pipe to a process that died with unread input
                pass
