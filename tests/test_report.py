"""The results report (docs/design.md §18): per-sample statistics that reproduce every scorer's numbers, the clustered
bootstrap, the protocol card, the parse audit, the published tables and the report command end to end."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from etchat.eval.charades import metrics as charades
from etchat.eval.dvc import evaluate as dvc_evaluate
from etchat.eval.etbench import compute_metrics, parsing
from etchat.eval.etbench import report as etbench_report
from etchat.eval.etbench.sample_scores import etbench_sample_scores
from etchat.eval.metrics.captions import CaptionScorers
from etchat.eval.metrics.similarity import SentenceSimilarity
from etchat.eval.protocol import PROTOCOL_FILE, protocol_card
from etchat.eval.qvhighlights import evaluate as qvh_evaluate
from etchat.eval.qvhighlights.sample_scores import qvhighlights_sample_scores
from etchat.eval.report import analysis, bootstrap, cli, published, runs
from etchat.eval.run_record import read_run_record
from etchat.eval.sample_scores import SAMPLE_SCORES_FILE, SampleScores, Stratum, formula_values, weighted_sums
from etchat.io import read_records
from etchat.toy import predictions as toy_predictions
from etchat.toy.baselines import random_answer

DATA = Path(__file__).parent / "data"
GROUNDING_TASKS = ("tvg", "epm", "tal", "evs", "vhd", "tem")  # scored without the sentence model or Java


def toy_samples(scale=0.04, seed=0, tasks=GROUNDING_TASKS):
    return [s for s in toy_predictions.make_predictions(scale, seed) if s["task"] in tasks]


def run_record(seed=0, name="work_dirs/etchat-stage-3", greedy=False) -> dict:
    """A run.json in the layout of the interface contract (CONTRACTS §1)."""
    return {
        "format": 1,
        "benchmark": "etbench",
        "model": {"name": name, "revision": "0123abc", "weights_digest": "sha256:feedbeef"},
        "settings": {
            "decoding": {"greedy": greedy, "temperature": 0.2, "top_k": 50, "top_p": None, "max_new_tokens": 2048,
                         "repetition_penalty": None, "seed": seed},
            "video": {"fps": 1, "min_frames": None, "max_frames": 350, "frame_size": 224,
                      "vision_processor": "clip_center_224"},
            "prompts_digest": "sha256:0f0f",
            "dtype": "float16",
        },
        "project_version": "0.1.0+g0123456789ab",
        "environment": {"device": "NVIDIA H100", "torch": "2.13.0", "transformers": "5.25.0", "python": "3.11.7"},
        "created": "2026-12-06T12:00:00Z",
    }  # fmt: skip


def score_etbench(folder: Path, samples: list[dict], record: dict | None = None) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "etbench.json").write_text(json.dumps(samples))
    if record is not None:
        (folder / "run.json").write_text(json.dumps(record))
    compute_metrics.main([str(folder)])
    return json.loads((folder / "metrics.json").read_text())


def score_charades(folder: Path, records: list[dict]) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "charades_sta.json").write_text(json.dumps(records))
    return charades.main([str(folder)])


def charades_records(rng: random.Random, good: bool, count=60) -> list[dict]:
    """Queries on count / 3 videos (three per video); good answers lie near the span, bad ones anywhere."""
    records = []
    for i in range(count):
        start = rng.uniform(0, 20)
        span = [round(start, 1), round(start + rng.uniform(3, 10), 1)]
        if good:
            pred = [span[0] + rng.uniform(-1, 1), span[1] + rng.uniform(-1, 1)]
        else:
            pred = sorted(rng.uniform(0, 30) for _ in range(2)) if rng.random() < 0.7 else [5.0]
        records.append({"idx": i, "vid": f"video{i // 3}", "span": span, "pred": pred, "response": f"answer {i}"})
    return records


# ---------------------------------------------------------------------------------------------------------------------
# Formulas and the clustered bootstrap
# ---------------------------------------------------------------------------------------------------------------------


def test_formulas_by_hand():
    stratum = Stratum(
        ["a", "b", "c", "d"],
        ["v1", "v1", "v2", "v3"],
        {
            "hit": [1, 0, 1, 1],
            "f1": [0.5, 0.0, 1.0, 0.0],
            "parsed": [1, 0, 1, 1],
            "p": [0.5, 0, 1, 0],
            "r": [1, 0, 0, 0],
        },
    )
    sums = {"s": weighted_sums(stratum)}
    assert formula_values(["unit_mean", "s", "hit"], sums)[0] == 0.75
    assert formula_values(["sum_ratio", "s", "f1", "parsed"], sums)[0] == pytest.approx(1.5 / 3)
    # P = 1.5 / 4, R = 1 / 4 -> F1 = 2PR / (P + R) = 0.3
    assert formula_values(["f1", ["unit_mean", "s", "p"], ["unit_mean", "s", "r"]], sums)[0] == pytest.approx(0.3)
    assert formula_values(["mean", ["unit_mean", "s", "hit"], ["unit_mean", "s", "r"]], sums)[0] == 0.5
    # Cluster weights (v1, v2, v3) = (2, 0, 1): a, b twice, d once -> hits 1 + 0 + 1 + 0 + 1 of 5 units.
    weighted = {"s": weighted_sums(stratum, np.array([[2.0, 0.0, 1.0]]))}
    assert formula_values(["unit_mean", "s", "hit"], weighted)[0] == pytest.approx(3 / 5)
    empty = {"e": weighted_sums(Stratum([], [], {}))}
    assert formula_values(["unit_mean", "e", "hit"], empty)[0] == 0  # an empty subset group scores 0, as officially


def test_cluster_weights_are_seeded_multinomial_draws():
    clusters = [f"v{i}" for i in range(7)]
    weights = bootstrap.cluster_weights(clusters, 500, seed=3, stratum="tvg/x")
    assert weights.shape == (500, 7) and (weights.sum(axis=1) == 7).all()
    assert (weights == bootstrap.cluster_weights(clusters, 500, seed=3, stratum="tvg/x")).all()
    assert not (weights == bootstrap.cluster_weights(clusters, 500, seed=4, stratum="tvg/x")).all()
    assert not (weights == bootstrap.cluster_weights(clusters, 500, seed=3, stratum="tvg/y")).all()
    assert weights.mean(axis=0) == pytest.approx(np.ones(7), abs=0.15)  # each video drawn once per resample on average


def test_questions_of_one_video_are_resampled_together():
    # Two videos of three questions: all right on v1, all wrong on v2. Drawing videos, a resample's accuracy can only
    # be 0, 1/2 or 1 (a per-question bootstrap would give sixths).
    stratum = Stratum([f"q{i}" for i in range(6)], ["v1"] * 3 + ["v2"] * 3, {"correct": [1, 1, 1, 0, 0, 0]})
    scores = SampleScores("toy", {"s": stratum}, {"Acc": ["unit_mean", "s", "correct"]})
    resampled = bootstrap.resampled_metrics([scores], ["Acc"], 400, seed=0)
    assert set(np.round(resampled.values[0]["Acc"], 6)) == {0.0, 0.5, 1.0}
    assert resampled.at_sample[0]["Acc"] == 0.5 and resampled.samples == 6 and resampled.complete


def test_interval_width_matches_the_binomial_standard_error():
    # 400 independent videos, one question each, 30% right: the 95% interval is about +-1.96 sqrt(p(1-p)/n).
    rng = np.random.default_rng(0)
    correct = (rng.random(400) < 0.3).astype(float)
    p = correct.mean()
    stratum = Stratum([f"q{i}" for i in range(400)], [f"v{i}" for i in range(400)], {"correct": list(correct)})
    scores = SampleScores("toy", {"s": stratum}, {"Acc": ["unit_mean", "s", "correct"]})
    resampled = bootstrap.resampled_metrics([scores], ["Acc"], 2000, seed=1)
    interval = bootstrap.percentile_interval(resampled.values[0]["Acc"])
    half_width = 1.96 * np.sqrt(p * (1 - p) / 400)
    assert interval.high - interval.low == pytest.approx(2 * half_width, rel=0.15)
    assert interval.low < p < interval.high


def test_paired_runs_share_their_resamples():
    units, clusters = [f"q{i}" for i in range(40)], [f"v{i // 2}" for i in range(40)]
    rng = np.random.default_rng(2)
    a = Stratum(units, clusters, {"correct": list((rng.random(40) < 0.5).astype(float))})
    b = Stratum(units, clusters, {"correct": list(a.columns["correct"])})
    b.columns["correct"][0] = 1 - b.columns["correct"][0]  # one answer differs
    metric = {"Acc": ["unit_mean", "s", "correct"]}
    runs_ = [SampleScores("toy", {"s": a}, metric), SampleScores("toy", {"s": b}, metric)]
    resampled = bootstrap.resampled_metrics(runs_, ["Acc"], 300, seed=0)
    difference = resampled.values[0]["Acc"] - resampled.values[1]["Acc"]
    # Paired: each resample's difference is that one answer times its video's draw count, out of 40 answers (whole
    # multiples of 1/40); runs resampled apart would differ by anything.
    counts = np.abs(difference) * 40
    assert np.allclose(counts, np.round(counts)) and counts.max() > 0


def test_sample_scores_file_round_trip(tmp_path):
    stratum = Stratum(["a", "b"], ["v", "v"], {"x": [1.0, float("nan")]})
    scores = SampleScores("toy", {"s": stratum}, {"X": ["unit_mean", "s", "x"]}, scoring={"rules": "r"})
    scores.write(tmp_path / SAMPLE_SCORES_FILE)
    first = (tmp_path / SAMPLE_SCORES_FILE).read_bytes()
    scores.write(tmp_path / SAMPLE_SCORES_FILE)
    assert (tmp_path / SAMPLE_SCORES_FILE).read_bytes() == first  # no time stamp: the same content, the same bytes
    back = SampleScores.read(tmp_path / SAMPLE_SCORES_FILE)
    assert back.strata["s"].units == ["a", "b"] and np.isnan(back.strata["s"].columns["x"][1])
    (tmp_path / "bad.json.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="bad.json.gz"):
        SampleScores.read(tmp_path / "bad.json.gz")


# ---------------------------------------------------------------------------------------------------------------------
# Every scorer's statistics reproduce its own numbers
# ---------------------------------------------------------------------------------------------------------------------


def assert_reproduces(scores: SampleScores, official: dict[str, float], tolerance: float):
    recomputed = scores.values()
    assert official and set(official) <= set(recomputed)
    for name, value in official.items():
        assert recomputed[name] == pytest.approx(value, abs=tolerance), name


def test_etbench_grounding_statistics_reproduce_metrics(tmp_path):
    samples = toy_samples()
    metrics = score_etbench(tmp_path, samples)
    scores = SampleScores.read(tmp_path / SAMPLE_SCORES_FILE)
    assert scores.benchmark == "etbench" and set(scores.strata) == {f"{s['task']}/{s['source']}" for s in samples}
    official = runs.official_values("etbench", metrics)
    assert set(official) == {"TVG (F1)", "EPM (F1)", "TAL (F1)", "EVS (F1)", "VHD (F1)", "TEM (Rec)", "F1 (gnd)"}
    assert_reproduces(scores, official, 1e-5)  # metrics.json rounds each group to 5 decimals
    assert (tmp_path / PROTOCOL_FILE).is_file()


@pytest.fixture(scope="module")
def similarity():
    return SentenceSimilarity()


@pytest.fixture(scope="module")
def caption_scorers(similarity):
    scorers = CaptionScorers(similarity)
    yield scorers
    scorers.close()


def test_etbench_caption_statistics_reproduce_metrics(similarity, caption_scorers):
    samples = [s for s in toy_predictions.make_predictions(0.01, 5) if s["task"] == "dvc"]
    # A second answer for one video: the official keying by video keeps the later sample's parse.
    first = next(s for s in samples if "seconds," in s["a"])
    samples.append({**first, "idx": 999, "a": "0 - 5 seconds, a person opens the refrigerator."})
    groups = compute_metrics.group_samples(samples)
    collected, per_sample = compute_metrics.evaluate_with_samples(
        groups, similarity=similarity, caption_scorers=caption_scorers
    )
    scores = etbench_sample_scores(groups, per_sample)
    official = runs.official_values("etbench", collected)
    assert set(official) == {"DVC (F1)", "DVC (Sim)"}
    assert_reproduces(scores, official, 1e-5)
    youcook = scores.strata["dvc/youcook2"]
    carried = [unit for unit, parsed in zip(youcook.units, youcook.columns["parsed"]) if parsed]
    assert "dvc/youcook2/999" in carried and f"dvc/youcook2/{first['idx']}" not in carried
    # The other tasks' statistics (multiple choice, GVQ, SLC) are checked by the slow end-to-end test: the report
    # uses a run's statistics only when they reproduce its metrics.json.


def test_charades_statistics_reproduce_scores_and_audit_the_times(tmp_path):
    records = charades_records(random.Random(0), good=False)
    records[1]["pred"] = None
    records[2]["pred"] = [1.0, 2.0, 3.0]
    official = score_charades(tmp_path, records)
    scores = SampleScores.read(tmp_path / SAMPLE_SCORES_FILE)
    assert_reproduces(scores, {k: official[k] for k in runs.CHARADES_METRICS}, 1e-12)
    assert scores.strata["charades_sta"].clusters[:4] == ["video0", "video0", "video0", "video1"]
    failures = scores.audit["moment"].failures
    assert failures["no time"] == 1 and failures["three or more times"] == 1
    assert sum(failures.values()) == official["Failed"]
    assert [charades.time_failure(p) for p in ([1, 2], [], [4], "x")] == [
        None,
        "no time",
        "one time",
        "malformed times",
    ]
    assert charades.charades_sample_scores(records).values() == scores.values()


@pytest.mark.parametrize("case", ["etchat_ties", "hl_edges", "short_videos", "long_windows"])
def test_qvhighlights_statistics_reproduce_the_official_output(case):
    truth, submission = (
        read_records(DATA / "qvhighlights" / case / "gt.jsonl"),
        read_records(DATA / "qvhighlights" / case / "pred.jsonl"),
    )
    expected = json.loads((DATA / "qvhighlights" / case / "expected_metrics.json").read_text())
    scores = qvhighlights_sample_scores(submission, truth, DATA / "qvhighlights" / case / "pred.jsonl")
    official = runs.official_values("qvhighlights", expected)  # the official code's values, rounded to 0.01 %
    assert_reproduces(scores, official, 5.1e-5)
    videos = {line["qid"]: line["vid"] for line in truth}
    stratum = scores.strata["qvhighlights"]
    assert stratum.clusters == [videos[int(unit)] for unit in stratum.units]


def test_qvhighlights_command_writes_statistics_and_audits_missing_answers(tmp_path):
    folder = DATA / "qvhighlights" / "etchat_ties"
    truth, submission = read_records(folder / "gt.jsonl"), read_records(folder / "pred.jsonl")
    submission[0]["pred_relevant_windows"] = []
    (tmp_path / "sub.jsonl").write_text("".join(json.dumps(line) + "\n" for line in submission))
    (tmp_path / "gt.jsonl").write_text("".join(json.dumps(line) + "\n" for line in truth))
    qvh_evaluate.main([str(tmp_path / "sub.jsonl"), "--gt", str(tmp_path / "gt.jsonl")])
    scores = SampleScores.read(tmp_path / SAMPLE_SCORES_FILE)
    assert scores.audit["MR"].failures == {"no window": 1} and scores.audit["HL"].failures == {}
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert_reproduces(scores, runs.official_values("qvhighlights", metrics), 5.1e-5)


def test_dvc_statistics_reproduce_the_scores(tmp_path, caption_scorers):
    case = DATA / "dvc" / "anet_two_refs"
    refs = sorted(case.glob("ref*.json"))
    submission = json.loads((case / "pred.json").read_text())
    references = [dvc_evaluate.load_references(ref) for ref in refs]
    result, report, scores = dvc_evaluate.evaluate_with_samples(
        submission, references, str(case / "pred.json"), scorers=caption_scorers
    )
    assert_reproduces(scores, runs.official_values("dvc", result), 1e-9)
    assert sum(scores.audit["captions"].failures.values()) == report.missing_predictions + report.no_proposals


# ---------------------------------------------------------------------------------------------------------------------
# Parse audit rules
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        ("The event happens in 3 - 7 seconds.", None),
        ("", parsing.EMPTY_ANSWER),
        ("I cannot tell.", "no number"),
        ("It happens at 5 seconds.", "a single number"),
        ("Between 3 and 7 and 9.", "numbers but no span"),
    ],
)
def test_span_failures_name_why_no_span_parses(answer, kind):
    assert parsing.span_failure(answer) == kind
    assert (parsing.parse_spans(answer) is None) == (kind is not None)


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        ("(B) the man", None),
        ("C.", None),
        ("Best Option: (", parsing.EMPTY_ANSWER),
        ("someone pours water", "no option letter"),
        ("(F) something", "letter not among the options"),
        ("I am not sure.", "'I ...' read as the letter I"),
    ],
)
def test_option_letter_failures(answer, kind):
    assert parsing.option_letter_failure(answer, "abcd") == kind


def test_dense_caption_failures():
    assert parsing.dense_caption_failure("0 - 10 seconds, a man walks in.") is None
    assert parsing.dense_caption_failure("start time 1, end time 2, a dog runs").startswith("'start time a")
    assert parsing.dense_caption_failure("No events here.") == "no time"
    assert parsing.dense_caption_failure("0-5 hi") == "times without a caption"
    assert parsing.highlight_failure("at 12.5 s") is None and parsing.highlight_failure("") == parsing.EMPTY_ANSWER


# ---------------------------------------------------------------------------------------------------------------------
# Run records, protocol card, published tables
# ---------------------------------------------------------------------------------------------------------------------


def test_run_record_reader(tmp_path):
    assert read_run_record(tmp_path) is None
    (tmp_path / "run.json").write_text(json.dumps(run_record()))
    assert read_run_record(tmp_path / "etbench.json")["model"]["revision"] == "0123abc"  # a file: its folder's
    (tmp_path / "run.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="run.json"):
        read_run_record(tmp_path)


def test_protocol_card_in_the_scored_folder(tmp_path):
    score_etbench(tmp_path, toy_samples(0.01), run_record(seed=7))
    text = (tmp_path / PROTOCOL_FILE).read_text()
    for expected in ("work_dirs/etchat-stage-3", "0123abc", "sha256:feedbeef", "fps 1", "max_frames 350",
                     "frame_size 224", "sha256:0f0f", "sampling; temperature 0.2", "seed 7", "float16",
                     "released with the data set", "inference 0.1.0+g0123456789ab", "NVIDIA H100",
                     "2026-12-06T12:00:00Z"):  # fmt: skip
        assert expected in text, expected
    card = protocol_card(None, {"rules": "r"}, "charades_sta")
    assert card["model"].startswith("not recorded") and card["benchmark"] == "Charades-STA"


def test_published_tables_match_the_report_columns():
    table = published.load_published("etbench")
    assert list(table.columns) == [column for _, _, column in etbench_report.overall_columns()]
    assert len(table.rows("full")) == 17 and len(table.rows("subset")) == 5  # 16 + 4 published models, E.T. Chat
    for variant in ("full", "subset"):
        assert table.reference(variant).model == "E.T. Chat"
        assert all(len(row.values) == 14 for row in table.rows(variant))
    assert table.best("full", "TVG (F1)").model == "E.T. Chat"
    assert table.rank("full", "TVG (F1)", 40.0) == (1, 17)
    charades_table = published.load_published("charades_sta")
    assert charades_table.reference("full").values["R1@0.5"] == 45.9
    assert published.load_published("qvhighlights") is None


# ---------------------------------------------------------------------------------------------------------------------
# The report command
# ---------------------------------------------------------------------------------------------------------------------


def make_model_folders(root: Path) -> dict[str, Path]:
    """A quickstart-like layout: trained (two seeds), untrained and random model folders, each holding scored
    etbench/ (grounding tasks) and charades/ folders."""
    samples = toy_samples(0.04)
    rng = random.Random(1)
    answers = {
        "trained": samples,
        "untrained": [{**s, "a": ""} for s in samples],
        "random": [{**s, "a": random_answer(s, rng)} for s in samples],
    }
    folders = {}
    for name, predictions in answers.items():
        folders[name] = root / name
        score_etbench(folders[name] / "etbench", predictions, run_record(name=f"work_dirs/{name}"))
        score_charades(folders[name] / "charades", charades_records(random.Random(3), good=name == "trained"))
    folders["trained-seed1"] = root / "trained-seed1"
    reseeded = [{**s, "a": ""} if i % 7 == 0 else s for i, s in enumerate(samples)]  # another seed: a few answers lost
    score_etbench(folders["trained-seed1"] / "etbench", reseeded, run_record(seed=1, name="work_dirs/trained"))
    return folders


def test_report_command_on_quickstart_like_folders(tmp_path):
    folders = make_model_folders(tmp_path)
    out = tmp_path / "report"
    report = cli.main(
        [f"trained={folders['trained']}", f"trained={folders['trained-seed1']}", f"untrained={folders['untrained']}",
         f"random={folders['random']}", "--out", str(out), "--resamples", "300"]
    )  # fmt: skip
    text = report.read_text()
    numbers = json.loads((out / "report.json").read_text())
    etbench = numbers["benchmarks"]["etbench"]
    # Values are the official ones; the trained setting is the mean of its two runs.
    trained_runs = [
        json.loads((folders[n] / "etbench" / "metrics.json").read_text()) for n in ("trained", "trained-seed1")
    ]
    tvg = np.mean([etbench_report.task_score(m, "tvg", "F1") for m in trained_runs])
    assert etbench["settings"]["trained"]["values"]["TVG (F1)"] == pytest.approx(tvg)
    low, high = etbench["settings"]["trained"]["intervals"]["TVG (F1)"]
    assert low < tvg < high
    assert etbench["settings"]["trained"]["spread"]["TVG (F1)"]["runs"] == 2
    # trained - untrained: the untrained model answers nothing, so the grounding differences exclude 0 ...
    versus_untrained = etbench["differences"][0]
    assert versus_untrained["other"] == "untrained"
    assert all(versus_untrained["excludes_zero"][m] for m in ("TVG (F1)", "TAL (F1)", "VHD (F1)", "F1 (gnd)"))
    # ... and its parse audit counts every answer as empty (2 TVG groups of 20 samples).
    assert "| TVG | 40 | 40 (100.0%) | empty answer: 40 |" in text
    charades_numbers = numbers["benchmarks"]["charades_sta"]
    assert charades_numbers["differences"][0]["excludes_zero"]["mIoU"]
    for heading in ("## Protocol", "## E.T. Bench", "## Charades-STA", "### Placement among published results",
                    "### Runs of one setting (seeds)", "### Paired differences", "### Parse audit"):  # fmt: skip
        assert heading in text, heading
    assert "| E.T. Chat | E.T. Chat | 44.6 | 37.0 | 33.6 | 38.6 |" not in text  # only the columns the runs have
    assert "| E.T. Chat | E.T. Chat | 38.6 | 10.2 | 30.8 | 25.4 | 62.5 | 16.5 |" in text
    assert "| E.T. Chat | E.T. Chat | 65.7 | 45.9 | 20.0 | 42.3 |" in text
    assert "sha256:feedbeef" in text and "seed 1" in text
    for figure in ("etbench_scores.png", "etbench_differences.png", "charades_sta_scores.png"):
        assert Image.open(out / figure).size[0] > 300


def test_report_without_sample_scores_still_shows_the_values(tmp_path, capsys):
    folder = tmp_path / "old"
    score_charades(folder, charades_records(random.Random(0), good=True))
    (folder / SAMPLE_SCORES_FILE).unlink()
    report = cli.main([str(folder), "--out", str(tmp_path / "out")])
    text = report.read_text()
    assert "no sample_scores.json.gz" in text and "| R1@0.5 |" in text
    with pytest.raises(SystemExit) as exit_info:
        cli.main([str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "missing" in capsys.readouterr().err


def test_stale_sample_scores_are_not_used(tmp_path):
    folder = tmp_path / "run"
    score_charades(folder, charades_records(random.Random(0), good=True))
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["mIoU"] += 0.1  # scores that the statistics no longer reproduce
    (folder / "metrics.json").write_text(json.dumps(metrics))
    [run] = runs.load_runs([str(folder)])
    assert run.scores is None and "does not reproduce" in run.notes[0]


def test_settings_with_different_samples_are_compared_on_the_common_ones(tmp_path):
    records = charades_records(random.Random(0), good=True)
    score_charades(tmp_path / "a", records)
    score_charades(tmp_path / "b", records[:-6])  # two videos fewer
    settings = runs.group_settings(runs.load_runs([f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}"]))
    result = analysis.analyse_benchmark("charades_sta", settings["charades_sta"], 200, seed=0, level=0.95)
    [comparison] = result.comparisons
    assert comparison.samples == 54 and "54 samples" in comparison.notes[0]
    # The same answers on the common samples: no difference, on any resample.
    assert comparison.differences["mIoU"] == 0
    assert comparison.intervals["mIoU"] == bootstrap.Interval(0.0, 0.0)
    assert not comparison.intervals["mIoU"].excludes_zero()


@pytest.mark.slow
def test_report_on_every_benchmark_and_all_etbench_tasks(tmp_path):
    """The whole chain at a small scale: all 12 E.T. Bench tasks (sentence model, Java), Charades-STA, QVHighlights
    and dense captioning scored by their commands, then one report over trained / untrained / random."""
    samples = toy_predictions.make_predictions(0.02, 0)
    rng = random.Random(0)
    qvh = DATA / "qvhighlights" / "etchat_ties"
    dvc_case = DATA / "dvc" / "yc2_many_preds"
    for name in ("trained", "untrained", "random"):
        answers = {"trained": samples, "untrained": [{**s, "a": ""} for s in samples]}.get(
            name, [{**s, "a": random_answer(s, rng)} for s in samples]
        )
        score_etbench(tmp_path / name / "etbench", answers)
        score_charades(tmp_path / name / "charades", charades_records(random.Random(2), good=name == "trained"))
        qvh_out = tmp_path / name / "qvhighlights"
        qvh_out.mkdir()
        qvh_evaluate.main(
            [str(qvh / "pred.jsonl"), "--gt", str(qvh / "gt.jsonl"), "--out", str(qvh_out / "metrics.json")]
        )
        dvc_out = tmp_path / name / "dvc"
        dvc_out.mkdir()
        dvc_evaluate.main([str(dvc_case / "pred.json"), "--references", str(dvc_case / "ref.json"), "--out",
                           str(dvc_out / "metrics.json")])  # fmt: skip
    report = cli.main(
        [f"{n}={tmp_path / n}" for n in ("trained", "untrained", "random")] + ["--out", str(tmp_path / "r")]
    )
    numbers = json.loads((tmp_path / "r" / "report.json").read_text())
    assert list(numbers["benchmarks"]) == ["etbench", "charades_sta", "qvhighlights", "dvc"]
    etbench = numbers["benchmarks"]["etbench"]["settings"]["trained"]
    assert len(etbench["intervals"]) == 19  # 14 Overall columns and 5 Merged ones
    assert "## Dense video captioning" in report.read_text()
