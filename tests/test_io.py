"""The project's JSON files and file checks: atomic writes with the usual mode, no NaN, leftovers removed, whole files
told from cut ones."""

import json
import math
import os
import stat

import pytest
import torch
from safetensors.torch import save_file

from etchat.io import (
    file_problem,
    load_records,
    read_records,
    remove_stale_temp_files,
    without_non_finite,
    write_json_atomic,
)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_json_gets_the_mode_open_would_give(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a.json", [1, 2])
        (tmp_path / "b.json").write_text("[]")
    finally:
        os.umask(old)
    assert mode(tmp_path / "a.json") == mode(tmp_path / "b.json") == 0o644
    assert json.loads((tmp_path / "a.json").read_text()) == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]  # no temporary file left


def test_nan_is_never_written(tmp_path):
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "x.json", {"a": math.nan})
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary
    assert without_non_finite({"a": [1.0, math.nan, {"b": math.inf}], "c": "nan"}) == {
        "a": [1.0, None, {"b": None}],
        "c": "nan",
    }


def test_leftovers_of_an_interrupted_write_are_removed(tmp_path):
    (tmp_path / ".etbench.json.abc123.tmp").write_text("[{")
    (tmp_path / "etbench.json").write_text("[]")
    removed = remove_stale_temp_files(tmp_path)
    assert [p.name for p in removed] == [".etbench.json.abc123.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["etbench.json"]


def test_records_of_a_folder_skip_metrics_and_hidden_files(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"k": 1}]))
    (tmp_path / "b.jsonl").write_text('{"k": 2}\n\n{"k": 3}\n')
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / ".a.json.x.tmp").write_text("[")
    assert [r["k"] for r in load_records(tmp_path)] == [1, 2, 3]
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(ValueError, match=r"c\.json: expected a JSON list"):
        load_records(tmp_path)
    (tmp_path / "d.jsonl").write_text('{"k": 4}\n{"k"')
    with pytest.raises(ValueError, match=r"d\.jsonl: line 2"):
        read_records(tmp_path / "d.jsonl")


def test_cut_files_are_told_from_whole_ones(tmp_path):
    weights = tmp_path / "model.safetensors"
    save_file({"a": torch.zeros(100), "b": torch.ones(3, 4)}, str(weights))
    torch.save({"step": torch.arange(10)}, tmp_path / "optimizer.pt")
    (tmp_path / "trainer_state.json").write_text('{"global_step": 3}')
    for name in ("model.safetensors", "optimizer.pt", "trainer_state.json"):
        assert file_problem(tmp_path / name) is None
        whole = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(whole[: len(whole) - 20])
        assert file_problem(tmp_path / name), name
        (tmp_path / name).write_bytes(whole)
    (tmp_path / "model.safetensors").write_bytes(b"\x01")
    assert "header" in file_problem(tmp_path / "model.safetensors")
