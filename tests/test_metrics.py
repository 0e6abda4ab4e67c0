"""E.T. Bench scoring (compute_metrics), the synthetic prediction file and the Charades-STA scorer.

Expected scores are computed by hand in the comments next to each case.
"""

import json
import random
import shutil
import string
from pathlib import Path

import pytest

from etchat.eval.charades import metrics as eval_grounding
from etchat.eval.etbench import compute_metrics, dense_captioning, parsing, predictions, report, scorers, tasks
from etchat.eval.metrics import captions
from etchat.eval.metrics import meteor as meteor_module
from etchat.eval.metrics.similarity import SentenceSimilarity
from etchat.toy import predictions as synthetic_predictions

OPTIONS = [
    "a person opens the refrigerator",
    "the man cuts an onion on the board",
    "someone pours water into a glass",
    "a woman washes the dishes in the sink",
]


@pytest.fixture(scope="module")
def similarity():
    return SentenceSimilarity()


@pytest.fixture(scope="module")
def caption_scorers(similarity):
    scorers = captions.CaptionScorers(similarity)
    yield scorers
    scorers.close()


def _sample(task, answer, idx=0, source="src", **fields):
    return {"idx": idx, "task": task, "source": source, "a": answer, **fields}


# ---------------------------------------------------------------------------------------------------------------------
# Answer parsing
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "spans"),
    [
        ("The event happens in 12.5 - 20.0 seconds.", [[12.5, 20.0]]),
        ("It goes from 3 to 7.", [[3.0, 7.0]]),
        ("The event happens in 20 - 10 seconds.", [[10.0, 20.0]]),  # reversed span is reordered
        ("0 - 5, 10 - 15 and 30 - 40", [[0.0, 5.0], [10.0, 15.0], [30.0, 40.0]]),
        ("It starts at 5.\nIt ends at 9.", [[5.0, 9.0]]),  # rule 3: first number of each start/end sentence
        ("It starts at 5 and ends at 9.", None),  # one sentence -> one number -> no pair
        # hh:mm:ss: the hour digits are already numbers for rule 3, so two lines give (0, 0) ...
        ("The moment starts at 00:01:05\nand ends at 00:01:10", [[0.0, 0.0]]),
        # ... and a single sentence finds nothing (the official script raises UnboundLocalError here)
        ("The moment starts at 00:01:05 and ends at 00:01:10.", None),
        ("I don't know.", None),
        ("The event happens in 1..2 - 5 or 3 - 4.", [[3.0, 4.0]]),  # malformed number skipped
        ("the event happens at 12 – 20", None),  # a non-ASCII dash is not a range, one sentence, one number
    ],
)
def test_parse_spans(answer, spans):
    assert parsing.parse_spans(answer) == spans


def test_clock_times_are_converted_to_seconds():
    assert parsing._clock_seconds("01:02:03") == 3723.0
    text = "starts 00:01:05\nends 00:01:10"
    pairs = parsing._times_in_time_sentences(text, parsing._CLOCK_TIME, parsing._clock_seconds)
    assert pairs == [[65.0, 70.0]]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            "0.0 - 10.0 seconds, a man walks in. 10.0 - 20.0 seconds, he sits down.",
            ([[0.0, 10.0], [10.0, 20.0]], ["a man walks in.", "he sits down."]),
        ),
        # Text before the first time becomes the first caption (official quirk): captions shift by one.
        (
            "The video shows: 0 - 10 a man walks. 10 - 20 he sits.",
            ([[0.0, 10.0], [10.0, 20.0]], ["the video shows:", "a man walks."]),
        ),
        ("20 - 10 seconds, the chef adds salt.", ([[10.0, 20.0]], ["the chef adds salt."])),
        # A single time t > 20 becomes [t - 20, t + 20]; t <= 20 becomes [t, t + 40].
        ("At 30 seconds, the chef adds salt.", ([[10.0, 50.0]], ["the chef adds salt."])),
        ("At 5 seconds, the chef adds salt.", ([[5.0, 45.0]], ["the chef adds salt."])),
        ("At 1:05 the chef adds salt to the pan", ([[45.0, 85.0]], ["At 1:05 the chef adds salt to the pan."])),
        ("Start time: 5s end time: 9s\ndescription: a dog runs", ([[5.0, 9.0]], ["a dog runs"])),
        ("start time 1, end time 2, a dog runs", (None, None)),  # the official parser asserts on this form
        ("No events here.", (None, None)),
        # The 3-character caption is dropped by the first rule; the fallback then keeps the whole sentence.
        ("0 - 10 ok", ([[0.0, 10.0]], ["0 - 10 ok."])),
        ("0-5 hi", (None, None)),  # and sentences of 7 or fewer characters are dropped by the fallback
    ],
)
def test_parse_dense_captions(answer, expected):
    assert parsing.parse_dense_captions(answer) == expected


# ---------------------------------------------------------------------------------------------------------------------
# Grounding scorers
# ---------------------------------------------------------------------------------------------------------------------


def test_score_grounding():
    samples = [
        _sample("tvg", "The event happens in 12.5 - 20.0 seconds.", tgt=[10, 20]),  # IoU 7.5 / 10 = 0.75
        _sample("tvg", "From 3 to 7.", tgt=[0, 10]),  # IoU 4 / 10 = 0.4
        _sample("tvg", "No idea.", tgt=[0, 10]),  # failed
        _sample("tvg", "It happens in 20 - 10.", tgt=[15, 25]),  # [10, 20]: IoU 5 / 15
    ]
    result = scorers.score_grounding(samples)
    # hits @0.1: 3, @0.3: 3, @0.5: 1, @0.7: 1 out of 4
    assert result["F1@0.1"] == result["F1@0.3"] == 0.75
    assert result["F1@0.5"] == result["F1@0.7"] == 0.25
    assert result["F1"] == 0.5
    assert result["mIoU"] == round((0.75 + 0.4 + 1 / 3) / 4, 5)
    assert (result["Total"], result["Failed"]) == (4, 1)


def test_score_event_matching_takes_best_ground_truth():
    samples = [
        _sample("tem", "It happens in 32 - 40.", tgt=[[0, 10], [30, 40]]),  # best IoU 8 / 10
        _sample("tem", "It happens in 0 - 2.", tgt=[[10, 20]]),  # IoU 0
    ]
    result = scorers.score_event_matching(samples)
    assert [result[f"R@{t}"] for t in (0.1, 0.3, 0.5, 0.7)] == [0.5] * 4
    assert result["mRec"] == 0.5
    assert result["mIoU"] == 0.4


def test_score_action_localization():
    samples = [
        # IoU [[1, 0], [0, 0]]: at every threshold recall 1/2, precision 1/2 -> F1 0.5
        _sample("tal", "0 - 10, 50 - 60", tgt=[[0, 10], [20, 30]]),
        _sample("tal", "nothing", tgt=[[0, 10]]),  # failed: 0
        # IoU 0.5: F1 1 at 0.1, 0.3, 0.5; nothing at 0.7
        _sample("tal", "5 - 10", tgt=[[0, 10]]),
    ]
    result = scorers.score_action_localization(samples)
    assert result["F1@0.1"] == result["F1@0.3"] == result["F1@0.5"] == 0.5  # (0.5 + 0 + 1) / 3
    assert result["F1@0.7"] == round(0.5 / 3, 5)
    assert result["F1"] == round((3 * 0.5 + 0.5 / 3) / 4, 5)
    assert result["Failed"] == 1


def test_score_summarization():
    samples = [
        # seconds 0-9 vs 5-14: tp 5, fp 5, fn 5 -> F1 0.5
        _sample("evs", "The summary locates in 5 - 15.", tgt=[[0, 10]]),
        _sample("evs", "No summary.", tgt=[[0, 10]]),  # failed: left out of the mean
        # Python rounds half to even: [0.5, 2.5] covers seconds round(0.5)=0 .. round(2.5)=2 (exclusive) = {0, 1}
        _sample("evs", "The summary locates in 0 - 2.", tgt=[[0.5, 2.5]]),  # F1 1
    ]
    result = scorers.score_summarization(samples)
    assert result["F1"] == 0.75
    assert result["Failed"] == 1


def test_score_highlight():
    samples = [
        _sample("vhd", "The highlight moment happens in 35.5 seconds.", tgt=[[[10, 20]], [[30, 40]]]),  # 2nd annotator
        _sample("vhd", "The highlight is at 25.", tgt=[[10, 20]]),  # flat windows (one annotator): miss
        _sample("vhd", "None.", tgt=[[10, 20]]),  # failed
    ]
    result = scorers.score_highlight(samples)
    assert result["F1"] == round(1 / 3, 5)
    assert result["Failed"] == 1


# ---------------------------------------------------------------------------------------------------------------------
# Multiple choice and grounded QA
# ---------------------------------------------------------------------------------------------------------------------


def test_score_multiple_choice(similarity):
    answers = [
        "(B) the man cuts an onion on the board",  # bracketed right letter
        "B.",  # leading letter
        "Best Option: (B)",
        "(A) the man cuts an onion on the board",  # wrong letter, then the text is most similar to B: right
        "Someone pours water into it",  # no letter, most similar to C: wrong, failed
        "I think someone pours water",  # "i" followed by a space counts as a letter (not failed); C: wrong
        "",  # empty: wrong, failed
    ]
    samples = [_sample("rvq", a, idx=i, o=OPTIONS, p=1) for i, a in enumerate(answers)]
    result = scorers.score_multiple_choice(samples, similarity)
    assert result["Acc"] == round(4 / 7, 5)
    assert result["Failed"] == 2


def test_score_multiple_choice_five_options(similarity):
    options = [*OPTIONS, "the person types on a laptop"]
    answers = ["(E) the person types on a laptop", "e", "D."]  # right, right, wrong
    samples = [_sample("rar", a, idx=i, o=options, p=4) for i, a in enumerate(answers)]
    result = scorers.score_multiple_choice(samples, similarity)
    assert result["Acc"] == round(2 / 3, 5)
    assert result["Failed"] == 0


def test_score_multiple_choice_rejects_three_options(similarity):
    with pytest.raises(ValueError, match="4 or 5 options"):
        scorers.score_multiple_choice([_sample("rar", "A", o=OPTIONS[:3], p=0)], similarity)


def test_score_grounded_qa(similarity):
    answers = [
        "A. It happens in 10 - 20 seconds.",  # right, IoU 1
        "B) a person opens the refrigerator, 10 - 20",  # wrong letter is final although the text matches A
        "(A) it happens in 0 - 2 seconds",  # right, IoU 0
        "",  # failed
        "someone opens the refrigerator at 12 - 18",  # no letter: most similar is A, right; IoU 6 / 10
    ]
    samples = [_sample("gvq", a, idx=i, o=OPTIONS, p=0, tgt=[10, 20]) for i, a in enumerate(answers)]
    result = scorers.score_grounded_qa(samples, similarity)
    assert result["Acc"] == 0.6
    # recall hits: @0.1, @0.3, @0.5: 2 of 5; @0.7: 1 of 5
    assert [result[f"R@{t}"] for t in (0.1, 0.3, 0.5, 0.7)] == [0.4, 0.4, 0.4, 0.2]
    assert result["mRec"] == 0.35
    assert result["mIoU"] == 0.32
    assert result["Failed"] == 1


# ---------------------------------------------------------------------------------------------------------------------
# Dense captioning
# ---------------------------------------------------------------------------------------------------------------------


def test_caption_iou():
    assert captions.caption_iou([0, 10], [5, 15]) == pytest.approx(5 / 15)
    assert captions.caption_iou([0, 10], [20, 30]) == 0


def test_ptb_tokenize_matches_pycocoevalcap():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    texts = ["A man, walking.", 'He said "hi" (twice)!', "", "it's 3:30 - done..."]
    reference = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(texts)})
    assert captions.ptb_tokenize(texts) == [reference[i][0] for i in range(len(texts))]


def test_score_dense_captioning_detection(caption_scorers):
    samples = [
        _sample(
            "dvc",
            "0 - 10 seconds, a man walks in. 30 - 40 seconds, a dog barks.",
            video="v1",
            tgt=[[0, 10], [10, 20]],
            g=["a man walks in", "he sits down"],
        ),
        _sample("dvc", "No idea at all.", idx=1, video="v2", tgt=[[0, 5]], g=["a caption"]),  # failed
    ]
    result = dense_captioning.score_dense_captioning(samples, lambda: caption_scorers, random.Random(0))
    # v1: one of two predictions and one of two references covered at every threshold (P = R = 0.5); only one of
    # the two samples parsed, so both are scaled by 1/2 -> F1 0.25.
    assert [result[f"F1@{t}"] for t in (0.1, 0.3, 0.5, 0.7)] == [0.25] * 4
    assert result["F1"] == 0.25
    assert (result["Total"], result["Failed"]) == (2, 1)
    # One matched identical caption and one against a random string: similarity between 0.5 and 1.
    assert 0.5 < result["SentSim"] < 1


def test_score_dense_captioning_caption_metrics(caption_scorers):
    sample = _sample(
        "slc", "0 - 10 seconds, a man walks in the room.", video="v", tgt=[[0, 10]], g=["A man walks in the room"]
    )
    result = dense_captioning.score_dense_captioning([sample], lambda: caption_scorers, random.Random(0))
    assert result["F1"] == 1
    for metric in ("Bleu_1", "Bleu_4", "METEOR", "ROUGE_L", "SentSim"):
        assert result[metric] == pytest.approx(1, abs=1e-5), metric
    # CIDEr's document frequencies come from the one reference of the video: every idf is log(1/1) = 0.
    assert result["CIDEr"] == 0


def test_random_filler_is_seeded(caption_scorers):
    caption = captions.random_caption(random.Random(1))
    assert 10 <= len(caption) <= 20 and set(caption) <= set(string.ascii_lowercase)
    assert captions.random_caption(random.Random(1)) == caption
    sample = _sample("dvc", "0 - 10 seconds, a dog barks loudly.", video="v", tgt=[[50, 60]], g=["a cat"])
    first = dense_captioning.score_dense_captioning([sample], lambda: caption_scorers, random.Random(5))
    again = dense_captioning.score_dense_captioning([sample], lambda: caption_scorers, random.Random(5))
    assert first == again


def test_ptb_tokenize_repeated_texts():
    texts = ["A man, walking.", "The dog!", "A man, walking.", "line\nbreak"]
    assert captions.ptb_tokenize(texts) == ["a man walking", "the dog", "a man walking", "line break"]


def test_caption_sets_match_pycocoevalcap(caption_scorers, similarity):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from sentence_transformers.util import dot_score

    pairs = [
        ("a man walks in", "a man walks into the room"),
        ("he sits down", "the man sits on a chair"),
        ("qwertyuiopzx", "he sits down"),
        ("the dog barks", "a dog barks at the man"),
    ]
    # Sets as thresholds give them: the same pairs again, a subset, and one pair in two sets.
    sets = [pairs, pairs[:2], pairs, pairs[1:], pairs[3:]]
    as_dicts = [({i: [ref] for i, (_, ref) in enumerate(s)}, {i: [hyp] for i, (hyp, _) in enumerate(s)}) for s in sets]
    rows = caption_scorers.score_sets(as_dicts)
    for (refs, hyps), row in zip(as_dicts, rows):
        assert list(row) == list(captions.CAPTION_METRICS)
        assert [row[f"Bleu_{n}"] for n in range(1, 5)] == Bleu(4).compute_score(refs, hyps, verbose=0)[0]
        assert row["ROUGE_L"] == Rouge().compute_score(refs, hyps)[0]
        assert row["CIDEr"] == Cider().compute_score(refs, hyps)[0]
        # The official layout: one encode call for the references, one for the hypotheses.
        keys = list(refs)
        official = dot_score(
            similarity.model.encode([refs[k][0] for k in keys]), similarity.model.encode([hyps[k][0] for k in keys])
        )
        official_mean = sum(official[i, i].item() for i in range(len(keys))) / len(keys)
        assert row["SentSim"] == pytest.approx(official_mean, abs=1e-6)
        assert 0 < row["METEOR"] < 1
    assert rows[0] == rows[2]
    assert caption_scorers.score(*as_dicts[3]) == rows[3]
    # Without a sentence model, the same metrics less SentSim (the METEOR process is shared, so not closed here).
    without_similarity = captions.CaptionScorers(meteor=caption_scorers.meteor)
    assert without_similarity.score(*as_dicts[3]) == {k: v for k, v in rows[3].items() if k != "SentSim"}


def test_meteor_statistics_are_reused(caption_scorers):
    meteor = caption_scorers.meteor
    first = meteor.set_scores([[("a cat sits on the mat", ("the cat is on the mat",))]])
    sent = []
    original = meteor._exchange
    meteor._exchange = lambda lines, counts: sent.extend(lines) or original(lines, counts)
    try:
        again = meteor.set_scores([[("a cat sits on the mat", ("the cat is on the mat",))]])
    finally:
        meteor._exchange = original
    assert again == first
    assert [line.split(" ")[0] for line in sent] == ["EVAL"]  # no second SCORE line for a known pair


def test_meteor_failure_is_reported():
    with meteor_module.Meteor(java="false") as meteor:
        with pytest.raises(RuntimeError, match="METEOR stopped answering"):
            meteor.set_scores([[("a", ("b",))]])


def test_batched_similarity_differs_from_the_official_layout_only_in_the_last_bits(similarity):
    texts = ["(A) 0.1 - 14.6", "a man walks in", "qwertyuiopasdf", "the person opens the fridge door slowly"]
    similarity.prepare(texts + [f"filler sentence number {i}" for i in range(40)])
    for a in texts:
        for b in texts:
            assert similarity.pair(a, b) == pytest.approx(similarity.pair_alone(a, b), abs=1e-6)


def test_most_similar_follows_the_official_rule(similarity):
    from sentence_transformers.util import dot_score

    def official(text, candidates):  # the official compute_sim and its strict '>' (first one on ties)
        best, best_score = 0, float("-inf")
        for i, candidate in enumerate(candidates):
            score = float(dot_score(similarity.model.encode([text]), similarity.model.encode([candidate]))[0, 0])
            if score > best_score:
                best, best_score = i, score
        return best

    candidates = [f"({letter}) {option}" for letter, option in zip("ABCD", OPTIONS)]
    for text in ("someone pours water into it", "a man with an onion", "dishes"):
        assert similarity.most_similar(text, candidates) == official(text, candidates)
    # A tie is a close call: decided on the official embeddings, and the first candidate wins.
    assert similarity.most_similar("a glass", ["(A) a glass", "(A) a glass"]) == 0


def test_missing_java_is_reported(monkeypatch):
    monkeypatch.setattr(captions.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="default-jre-headless"):
        captions.require_java()
    groups = {"dvc": {"youcook2": [_sample("dvc", "x", video="v", tgt=[[0, 1]], g=["y"])]}}
    with pytest.raises(RuntimeError, match="Java"):
        compute_metrics.evaluate(groups)


# ---------------------------------------------------------------------------------------------------------------------
# Summary, loading, command line
# ---------------------------------------------------------------------------------------------------------------------


def test_summarize_all_tasks():
    values = {"rar": 0.5, "eca": 0.25, "rvq": 0.75, "tvg": 0.1, "epm": 0.2, "tal": 0.3, "evs": 0.4, "vhd": 0.5}
    collected = {task: {"s": {"Acc": v, "F1": v}} for task, v in values.items()}
    collected["dvc"] = {"a": {"F1": 0.2, "SentSim": 0.4}}
    collected["slc"] = {"a": {"F1": 0.3, "SentSim": 0.7}, "b": {"F1": 0.5, "SentSim": 0.5}}  # task: 0.4 / 0.6
    collected["tem"] = {"a": {"mRec": 0.1}}
    collected["gvq"] = {"a": {"mRec": 0.3}}
    overall, merged = report.summarize(collected)
    assert list(overall.values()) == [
        "50.0", "25.0", "75.0", "10.0", "20.0", "30.0", "40.0", "50.0", "20.0", "40.0", "40.0", "60.0", "10.0", "30.0"
    ]  # fmt: skip
    assert list(merged.values()) == ["50.0", "30.0", "30.0", "50.0", "20.0"]


def test_summarize_missing_tasks():
    overall, merged = report.summarize({"tvg": {"a": {"F1": 0.5}, "b": {"F1": 0.25}}})
    assert overall["TVG (F1)"] == "37.5"  # mean over the sources
    assert sum(v == "-" for v in overall.values()) == 13
    assert set(merged.values()) == {"-"}


def test_empty_subset_group_scores_zero():
    samples = [
        _sample("evs", "0 - 10", idx=0, source="summe", tgt=[[0, 10]]),
        _sample("evs", "0 - 10", idx=0, source="tvsum", tgt=[[0, 10]]),  # F1 1
        _sample("evs", "0 - 10", idx=1, source="tvsum", tgt=[[50, 60]]),  # not in the subset
    ]
    groups = predictions.group_samples(samples, {"evs": {"tvsum": [0]}})
    assert [len(g) for g in groups["evs"].values()] == [0, 1]
    collected = compute_metrics.evaluate(groups)
    assert collected["evs"]["summe"]["F1"] == 0
    assert report.summarize(collected)[0]["EVS (F1)"] == "50.0"  # (0 + 1) / 2, as the official subset score


def test_packaged_subset_has_470_samples():
    subset = predictions.load_subset()
    assert sum(len(ids) for sources in subset.values() for ids in sources.values()) == 470
    assert set(subset) == set(tasks.TASKS)


def test_load_samples_reports_bad_input(tmp_path):
    path = tmp_path / "preds.json"
    path.write_text(json.dumps([_sample("tvg", "1 - 2", idx=7)]))  # no tgt
    with pytest.raises(ValueError, match=r"preds.json.*idx=7.*tgt"):
        predictions.load_predictions(path)
    path.write_text(json.dumps([_sample("xyz", "1 - 2")]))
    with pytest.raises(ValueError, match="unknown"):
        predictions.load_predictions(path)


def test_main_on_folder_with_missing_tasks_and_old_metrics(tmp_path):
    samples = [_sample("tvg", "It happens in 0 - 10.", idx=i, source="charades_sta", tgt=[0, 10]) for i in range(2)]
    (tmp_path / "etbench_0.json").write_text(json.dumps(samples[:1]))
    (tmp_path / "etbench_1.json").write_text(json.dumps(samples[1:]))
    first = compute_metrics.main([str(tmp_path)])
    second = compute_metrics.main([str(tmp_path)])  # metrics.json from the first run is not read as predictions
    assert first["overall"] == second["overall"]
    assert first["overall"]["TVG (F1)"] == "100.0" and first["overall"]["RAR (Acc)"] == "-"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    tasks = {key: value for key, value in metrics.items() if key != "input_report"}  # readers skip non-task keys
    assert tasks == {"tvg": {"charades_sta": {**metrics["tvg"]["charades_sta"], "Total": 2, "F1": 1.0}}}
    assert metrics["input_report"]["samples"] == 2 and metrics["input_report"]["lost"] == 0
    assert "Merged" in (tmp_path / "metrics.log").read_text()


# ---------------------------------------------------------------------------------------------------------------------
# Synthetic prediction file and an end-to-end run
# ---------------------------------------------------------------------------------------------------------------------


def test_synthetic_predictions_full_size():
    samples = synthetic_predictions.make_predictions(scale=1.0, seed=0)
    assert len(samples) == 7289
    counts = {}
    for sample in samples:
        counts[(sample["task"], sample["source"])] = counts.get((sample["task"], sample["source"]), 0) + 1
    assert counts == {(task, source): size for task, source, size in synthetic_predictions.GROUP_SIZES}
    assert synthetic_predictions.make_predictions(scale=0.01, seed=3) == synthetic_predictions.make_predictions(
        scale=0.01, seed=3
    )


GOLDEN = Path(__file__).parent / "reference" / "etbench_golden"


def test_golden_file_scores_as_the_official_script(tmp_path, similarity, caption_scorers):
    """Every value of the released scoring script's metrics.json for a 364-sample file, reproduced.

    Input: ``python -m etchat.toy.predictions --out predictions.json --scale 0.05 --seed 0`` (20 groups, all 12
    tasks; sha256 fd9d43a3...eaf7). Expected: ``python -m etchat.bench.official_scoring --script
    <E.T. Bench data>/evaluation/compute_metrics.py predictions.json`` (seed 0, CPU), which wrote ``metrics.json``.

    The script is E.T. Bench's ``evaluation/compute_metrics.py`` as released with the data set on Hugging Face
    (revision 2d7bce9), which this machine cannot reach; the same file (34,008 characters, sha256 ff456bbf...aa87f)
    is public in THUNLP-MT/MUSEG as ``data/eval/et_bench/compute_metrics.py``, and that copy was run. The harness
    changes no rule of it; it makes the run offline and repeatable: the local all-MiniLM-L6-v2, ``random.seed(0)``
    after the imports, video ids in file order instead of set order (set order depends on the hash seed and decides
    which unmatched caption draws which random stand-in), ``PTBTokenizer(verbose=...)`` accepted, PYTHONHASHSEED=0
    (its docstring lists them). The release's multiple-choice rule is this project's: in RAR, ECA and RVQ a recognised
    wrong letter falls through to the next rule and then to sentence similarity. Under the harness's local variant
    that makes such a letter final (``--wrong_letter_final``, the rule of an edited copy in circulation) three values
    differ here: rar, eca and rvq Acc, one sample each (docs/design.md §9).

    Everything must be equal; SentSim is allowed 1e-4 because embedding in large batches may change the last bits
    (docs/design.md §9). On this file it is equal too. Only the per-group scores are compared: a metrics.json may hold
    other top-level keys (a report of the run's inputs) besides the tasks.
    """
    pred_file = tmp_path / "predictions.json"
    shutil.copy(GOLDEN / "predictions.json", pred_file)
    args = compute_metrics.parse_args([str(pred_file)])
    compute_metrics.run(args, similarity=similarity, caption_scorers=caption_scorers)

    expected = json.loads((GOLDEN / "metrics.json").read_text())
    produced = json.loads((tmp_path / "metrics.json").read_text())
    assert produced.pop("input_report")["lost"] == 0  # every scorer's metrics.json says what its input lacked
    assert [key for key in produced if key in tasks.TASKS] == list(expected)
    for task, sources in expected.items():
        assert list(produced[task]) == list(sources), task
        for source, values in sources.items():
            assert list(produced[task][source]) == list(values), (task, source)
            for metric, value in values.items():
                got = produced[task][source][metric]
                tolerance = 1e-4 if metric == "SentSim" else 0
                assert got == pytest.approx(value, rel=0, abs=tolerance), (task, source, metric, got, value)
    log = (tmp_path / "metrics.log").read_text()
    for _, _, column in report.overall_columns():
        assert column in log


# ---------------------------------------------------------------------------------------------------------------------
# Charades-STA
# ---------------------------------------------------------------------------------------------------------------------


def test_grounding_scores(tmp_path):
    span = [10, 20]
    preds = [
        [12, 20],  # IoU 8 / 10 = 0.8
        [[15, 25]],  # nested pair accepted: IoU 5 / 15
        [0, 5],  # IoU 0
        [20, 10],  # reversed: used as given, IoU 0, not a failure
        [1, 2, 3],  # three times: failure
        None,  # failure
        [10, 16],  # IoU 6 / 10 = 0.6
    ]
    samples = [{"vid": f"v{i}", "query": "q", "span": span, "pred": p} for i, p in enumerate(preds)]
    path = tmp_path / "charades_sta.json"
    path.write_text(json.dumps(samples))
    scores = eval_grounding.main([str(path), "--out", str(tmp_path / "scores.json")])
    assert scores["R1@0.3"] == pytest.approx(3 / 7)
    assert scores["R1@0.5"] == pytest.approx(2 / 7)
    assert scores["R1@0.7"] == pytest.approx(1 / 7)
    assert scores["mIoU"] == pytest.approx((0.8 + 1 / 3 + 0.6) / 7, rel=1e-6)
    assert (scores["Total"], scores["Failed"]) == (7, 2)
    assert scores["FailureRate"] == pytest.approx(2 / 7)
    assert json.loads((tmp_path / "scores.json").read_text())["Failed"] == 2


def test_grounding_rejects_bad_span():
    with pytest.raises(ValueError, match=r"sample #1 \(vid='b'\).*span"):
        eval_grounding.grounding_scores([{"vid": "a", "span": [0, 1], "pred": [0, 1]}, {"vid": "b", "pred": [0, 1]}])


# ---------------------------------------------------------------------------------------------------------------------
# Inputs a score must not hide: the same sample twice, samples whose inference failed, old outputs
# ---------------------------------------------------------------------------------------------------------------------


def _tvg(idx: int, answer: str = "It happens in 0 - 10.", **extra) -> dict:
    return _sample("tvg", answer, idx=idx, source="charades_sta", tgt=[0, 10], **extra)


def test_the_same_sample_in_two_files_is_refused_naming_both(tmp_path):
    (tmp_path / "etbench.json").write_text(json.dumps([_tvg(0), _tvg(1)]))
    (tmp_path / "etbench_1.json").write_text(json.dumps([_tvg(1, "It happens in 5 - 9.")]))
    (tmp_path / "metrics.json").write_text('{"old": "run"}')
    with pytest.raises(SystemExit) as exit_info:
        compute_metrics.main([str(tmp_path)])
    message = str(exit_info.value)
    assert "tvg/charades_sta/1" in message and "etbench.json" in message and "etbench_1.json" in message
    assert not (tmp_path / "metrics.json").exists()  # a failed run leaves no older scores behind


def test_identical_copies_of_a_sample_are_scored_once(tmp_path):
    (tmp_path / "etbench.json").write_text(json.dumps([_tvg(0), _tvg(1, "nothing")]))
    (tmp_path / "etbench_copy.json").write_text(json.dumps([_tvg(1, "nothing")]))
    result = compute_metrics.main([str(tmp_path)])
    assert result["groups"]["tvg"]["charades_sta"]["Total"] == 2
    assert result["groups"]["tvg"]["charades_sta"]["F1"] == 0.5


def test_samples_whose_inference_failed_are_scored_as_failures_and_exit_1_unless_allowed(tmp_path, capsys):
    samples = [_tvg(0), _tvg(1, "", error="VideoReadError: Cannot read v.mp4: no such file")]
    (tmp_path / "etbench.json").write_text(json.dumps(samples))
    with pytest.raises(SystemExit, match=r"1 of 2 samples were lost: 1 failed in inference .*tvg/charades_sta/1.*"
                       "--allow_errors") as stop:  # fmt: skip
        compute_metrics.main([str(tmp_path)])
    assert stop.value.code == 1
    assert capsys.readouterr().err.splitlines()[-1].startswith("compute_metrics: 1 of 2 samples were lost")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["tvg"]["charades_sta"]["Failed"] == 1 and metrics["input_report"]["failed_inference"] == 1
    result = compute_metrics.main([str(tmp_path), "--allow_errors"])
    assert result["groups"]["tvg"]["charades_sta"]["Failed"] == 1  # the empty answer does not parse
    assert json.loads((tmp_path / "metrics.json").read_text())["tvg"]["charades_sta"]["Total"] == 2


def test_charades_scoring_refuses_duplicates_and_failed_samples(tmp_path):
    record = {"idx": 0, "vid": "a", "span": [0, 2], "pred": [0, 2]}
    (tmp_path / "charades_sta_0.json").write_text(json.dumps([record]))
    (tmp_path / "charades_sta_1.json").write_text(json.dumps([{**record, "pred": [5, 6]}]))
    with pytest.raises(SystemExit, match=r"charades_sta_0\.json and .*charades_sta_1\.json"):
        eval_grounding.main([str(tmp_path)])
    (tmp_path / "charades_sta_1.json").write_text(json.dumps([{"idx": 1, "span": [0, 2], "pred": None, "error": "x"}]))
    with pytest.raises(SystemExit, match="1 of 2 samples were lost: 1 failed in inference") as stop:
        eval_grounding.main([str(tmp_path)])
    assert stop.value.code == 1
    assert eval_grounding.main([str(tmp_path), "--allow_errors"])["Failed"] == 1
