"""One contract for the four scorers (docs/design.md §13): the same flags, exit status 2 and one line for bad input,
1 for lost samples unless --allow_errors, old scores removed first, conflicting duplicates refused naming both places,
identical ones counted once, input_report in every metrics.json, one scorer per folder at a time (--once)."""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from etchat.eval import scoring
from etchat.eval.charades import metrics as charades
from etchat.eval.dvc import evaluate as dvc
from etchat.eval.etbench import compute_metrics as etbench
from etchat.eval.qvhighlights import evaluate as qvh
from etchat.locking import FileLock

ROOT = Path(__file__).resolve().parents[1]
QVH_CASE = ROOT / "tests" / "data" / "qvhighlights" / "hl_edges"
DVC_CASE = ROOT / "tests" / "data" / "dvc" / "anet_single"
MAINS = {"etbench": etbench.main, "charades": charades.main, "qvhighlights": qvh.main, "dvc": dvc.main}
PROGS = {
    "etbench": "compute_metrics",
    "charades": "etchat.eval.charades",
    "qvhighlights": "etchat.eval.qvhighlights",
    "dvc": "etchat.eval.dvc",
}


def tvg(idx: int, answer: str = "It happens in 0 - 10.", **extra) -> dict:
    return {"idx": idx, "task": "tvg", "source": "charades_sta", "video": "v.mp4", "duration": 20.0,
            "q": "When?", "tgt": [0, 10], "a": answer, **extra}  # fmt: skip


def charades_record(idx: int, **extra) -> dict:
    return {"idx": idx, "vid": f"v{idx}", "span": [0, 2], "pred": [0, 2], **extra}


def qvh_records() -> list[dict]:
    truth = [json.loads(line) for line in (QVH_CASE / "gt.jsonl").read_text().splitlines()]
    submission = {line["qid"]: line for line in map(json.loads, (QVH_CASE / "pred.jsonl").read_text().splitlines())}
    records = []
    for line in truth:
        records.append(
            {**line, "task": "mr", "pred_relevant_windows": submission[line["qid"]]["pred_relevant_windows"]}
        )
        records.append({**line, "task": "hd", "pred_saliency_scores": submission[line["qid"]]["pred_saliency_scores"]})
    return records


def dvc_records() -> list[dict]:
    references = json.loads((DVC_CASE / "ref.json").read_text())
    return [
        {"video_id": video, "dataset": "activitynet", **entry, "response": "0 - 1, x.",
         "proposals": [{"sentence": "x", "timestamp": [0, 1]}]}
        for video, entry in references.items()
    ]  # fmt: skip


def write_predictions(kind: str, folder: Path, copies: int = 1, conflict: bool = False) -> None:
    """A prediction folder of ``kind`` whose first record also appears in a second file: the same (``copies``) or
    changed (``conflict``)."""
    records = {
        "etbench": [tvg(0), tvg(1)],
        "charades": [charades_record(0), charades_record(1)],
        "qvhighlights": qvh_records(),
        "dvc": dvc_records(),
    }[kind]
    stem = {"etbench": "etbench", "charades": "charades_sta", "qvhighlights": "qvhighlights", "dvc": "dvc"}[kind]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}_0.json").write_text(json.dumps(records))
    if copies > 1 or conflict:
        extra = dict(records[0])
        if conflict:
            key = {"etbench": "a", "charades": "pred", "qvhighlights": "pred_relevant_windows", "dvc": "response"}[kind]
            extra[key] = [[1, 2, 1.0]] if kind == "qvhighlights" else [5, 6] if kind == "charades" else "other"
        (folder / f"{stem}_1.json").write_text(json.dumps([extra]))


@pytest.fixture
def fast_dvc(monkeypatch):
    """The dense-captioning command without METEOR: the scores are stand-ins, the input handling is the real one."""

    def fake_evaluate(submission, references, source="submission", max_proposals=1000, scorers=None):
        from etchat.eval.dvc.formats import parse_submission

        _, report = parse_submission(submission, references, source, max_proposals)
        return {name: 0.0 for name in dvc.HEADLINE}, report

    monkeypatch.setattr(dvc, "evaluate", fake_evaluate)


@pytest.mark.parametrize("kind", list(MAINS))
def test_every_scorer_has_the_shared_flags(kind):
    module = {"etbench": etbench, "charades": charades, "qvhighlights": qvh, "dvc": dvc}[kind]
    text = module.build_parser().format_help()
    for flag in ("--out", "--allow_errors", "--once", "--verbose"):
        assert flag in text, (kind, flag)


@pytest.mark.parametrize("kind", list(MAINS))
def test_bad_input_is_one_line_exit_2_and_removes_old_scores(kind, tmp_path, capsys):
    folder = tmp_path / "pred"
    folder.mkdir()
    (folder / "metrics.json").write_text('{"old": "run"}')
    stem = {"etbench": "etbench", "charades": "charades_sta", "qvhighlights": "qvhighlights", "dvc": "dvc"}[kind]
    (folder / f"{stem}.json").write_text("[{not json")
    with pytest.raises(SystemExit) as stop:
        MAINS[kind]([str(folder)])
    assert stop.value.code == scoring.EXIT_BAD_INPUT
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [f"{PROGS[kind]}: error: {folder / f'{stem}.json'}: not valid JSON " + err[0].split("JSON ", 1)[1]]
    assert not (folder / "metrics.json").exists()


@pytest.mark.parametrize("kind", list(MAINS))
def test_conflicting_duplicates_are_refused_naming_both_places(kind, tmp_path, capsys, fast_dvc):
    write_predictions(kind, tmp_path, conflict=True)
    with pytest.raises(SystemExit) as stop:
        MAINS[kind]([str(tmp_path)])
    assert stop.value.code == scoring.EXIT_BAD_INPUT
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "_0.json and " in line and "_1.json with different contents" in line


@pytest.mark.parametrize("kind", list(MAINS))
def test_identical_duplicates_count_once_and_every_metrics_json_has_an_input_report(
    kind, tmp_path, fast_dvc, monkeypatch
):
    write_predictions(kind, tmp_path, copies=2)
    MAINS[kind]([str(tmp_path)])
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert list(result)[-1] == "input_report"
    report = result["input_report"]
    assert {"samples", "lost", "unparsable", "duplicates"} <= set(report)
    assert report["duplicates"] == 1 and report["lost"] == 0


def test_a_submission_line_twice_is_refused_when_it_differs_and_counted_once_when_equal(tmp_path, capsys):
    lines = (QVH_CASE / "pred.jsonl").read_text().splitlines()
    changed = json.loads(lines[0])
    changed["pred_relevant_windows"] = [[0, 1, 1.0]]
    (tmp_path / "dup.jsonl").write_text("\n".join([*lines, json.dumps(changed)]) + "\n")
    argv = [str(tmp_path / "dup.jsonl"), "--gt", str(QVH_CASE / "gt.jsonl"), "--out", str(tmp_path / "m.json")]
    with pytest.raises(SystemExit) as stop:
        qvh.main(argv)
    assert stop.value.code == 2 and f"(entries #0 and #{len(lines)}) with different contents" in capsys.readouterr().err
    (tmp_path / "dup.jsonl").write_text("\n".join([*lines, lines[0]]) + "\n")
    result = qvh.main(argv)
    expected = json.loads((QVH_CASE / "expected_metrics.json").read_text())
    assert result["brief"] == expected["brief"] and result["input_report"]["duplicates"] == 1


def test_a_dvc_submission_with_a_video_twice_is_refused(tmp_path, capsys):
    text = (DVC_CASE / "pred.json").read_text()
    data = json.loads(text)
    video = next(iter(data["results"]))
    # Append a second entry for the first video inside "results" (json.loads would keep the last one silently).
    duplicated = text.replace('"results": {', f'"results": {{"{video}": [], ', 1)
    (tmp_path / "sub.json").write_text(duplicated)
    with pytest.raises(SystemExit) as stop:
        dvc.main([str(tmp_path / "sub.json"), "--references", str(DVC_CASE / "ref.json")])
    assert stop.value.code == 2 and f"key {video!r} appears twice with different values" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["etbench", "charades"])
def test_lost_samples_exit_1_with_metrics_written_unless_allowed(kind, tmp_path, capsys, monkeypatch):
    if kind == "etbench":
        (tmp_path / "etbench.json").write_text(json.dumps([tvg(0), tvg(1, "", error="VideoReadError: gone")]))
    else:
        records = [charades_record(0), charades_record(1, pred=None, error="VideoReadError: gone")]
        (tmp_path / "charades_sta.json").write_text(json.dumps(records))
    with pytest.raises(SystemExit) as stop:
        MAINS[kind]([str(tmp_path)])
    assert stop.value.code == scoring.EXIT_LOST
    assert "1 of 2 samples were lost: 1 failed in inference" in capsys.readouterr().err.splitlines()[-1]
    report = json.loads((tmp_path / "metrics.json").read_text())["input_report"]
    assert (report["lost"], report["failed_inference"]) == (1, 1)
    assert MAINS[kind]([str(tmp_path), "--allow_errors"])["input_report"]["lost"] == 1


def test_subset_of_data_without_published_ids_is_refused(tmp_path, capsys):
    (tmp_path / "etbench.json").write_text(json.dumps([tvg(100000), tvg(100001)]))
    with pytest.raises(SystemExit) as stop:
        etbench.main([str(tmp_path), "--subset"])
    assert stop.value.code == 2
    assert "none of the 2 samples" in capsys.readouterr().err.splitlines()[-1]
    assert not (tmp_path / "metrics.json").exists()


class FullDisk:
    """Every file opened for writing under ``folder`` takes no byte: writes fail with ENOSPC, as on a full disk."""

    def __init__(self, folder: Path):
        self.folder = str(folder)
        self.real_open = open

    def __call__(self, file, mode="r", *args, **kwargs):
        handle = self.real_open(file, mode, *args, **kwargs)
        if isinstance(file, (str, os.PathLike)) and str(file).startswith(self.folder) and set(mode) & set("wa"):
            return _Full(handle, str(file))
        return handle


class _Full:
    def __init__(self, handle, name):
        self.handle, self.name = handle, name

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device", self.name)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def test_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    import builtins

    (tmp_path / "etbench.json").write_text(json.dumps([tvg(0), tvg(1)]))
    monkeypatch.setattr(builtins, "open", FullDisk(tmp_path))
    with pytest.raises(SystemExit) as stop:
        etbench.main([str(tmp_path)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Logging error" not in err and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip() and "it/s]" not in line]  # progress bars aside
    assert len(lines) == 1 and lines[0].startswith("compute_metrics: error: no space left on the device (")
    assert not (tmp_path / "metrics.json").exists()


# ---- one scorer per folder -------------------------------------------------------------------------------------------


def test_once_leaves_the_scoring_to_the_process_scoring_the_same_inputs(tmp_path, monkeypatch):
    calls = []
    real_evaluate = etbench.evaluate

    def fake_evaluate(groups, **kw):
        calls.append(1)
        return real_evaluate(groups, **kw)

    monkeypatch.setattr(etbench, "evaluate", fake_evaluate)
    (tmp_path / "etbench.json").write_text(json.dumps([tvg(0), tvg(1)]))
    args = etbench.parse_args([str(tmp_path), "--once"])
    digest = scoring._inputs_digest(etbench.scorer(), args, [tmp_path / "etbench.json"])
    with FileLock(tmp_path / ".metrics.json.lock", "another node", extra={"inputs": digest}):
        etbench.main([str(tmp_path), "--once"])  # the lock's holder scores these inputs: nothing to do
        assert calls == [] and not (tmp_path / "metrics.json").exists()
        with pytest.raises(SystemExit) as stop:  # without --once, a second scorer on the folder is refused
            etbench.main([str(tmp_path)])
        assert stop.value.code == 2
    etbench.main([str(tmp_path), "--once"])
    written = (tmp_path / "metrics.json").stat().st_mtime_ns
    etbench.main([str(tmp_path), "--once"])  # already scored: skipped
    assert calls == [1] and (tmp_path / "metrics.json").stat().st_mtime_ns == written
    (tmp_path / "metrics.json").unlink()
    etbench.main([str(tmp_path), "--once"])  # the scores were removed: scored again
    assert calls == [1, 1]


def test_multi_node_launchers_score_with_once():
    env = {**os.environ, "SKIP_SETUP": "1", "DRY_RUN": "1", "NNODES": "2", "NODE_RANK": "1", "CUDA_VISIBLE_DEVICES": ""}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    lines = subprocess.run(
        ["bash", str(ROOT / "scripts" / "inference.sh"), "ckpt"], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert lines[-1].strip() == "python -m etchat.eval.etbench ckpt/etbench --once"
    env["NNODES"], env["NODE_RANK"] = "1", "0"
    lines = subprocess.run(
        ["bash", str(ROOT / "scripts" / "inference.sh"), "ckpt"], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert lines[-1].strip() == "python -m etchat.eval.etbench ckpt/etbench"


def test_the_scorers_run_as_commands(tmp_path):
    write_predictions("charades", tmp_path / "pred")
    shutil.copy(ROOT / "compute_metrics.py", tmp_path / "compute_metrics.py")
    result = subprocess.run(
        [sys.executable, "-m", "etchat.eval.charades", str(tmp_path / "pred" / "missing")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"etchat.eval.charades: error: file or folder not found: {tmp_path / 'pred' / 'missing'}"
    ]
    ok = subprocess.run([sys.executable, "-m", "etchat.eval.charades", str(tmp_path / "pred")], cwd=ROOT)
    assert ok.returncode == 0
