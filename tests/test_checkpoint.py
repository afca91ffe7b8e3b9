"""The checkpoint module: one save and one load for every caller, errors that name the file."""

from __future__ import annotations

import pickle

import pytest
import torch
from typer.testing import CliRunner

from vidseq.cli import app
from vidseq.training import checkpoint as checkpoints
from vidseq.training.checkpoint import CheckpointError


class NotPlain:  # a pickled object that weights_only refuses
    pass


def test_save_then_load_round_trips_plain_types_and_tensors(tmp_path):
    state = {"model": {"name": "gru", "state": {"w": torch.ones(2)}}, "labels": ["a", "b"]}
    checkpoints.save(state, tmp_path / "sub" / "best.pt")
    loaded = checkpoints.load(tmp_path / "sub" / "best.pt")
    assert loaded["labels"] == ["a", "b"] and torch.equal(loaded["model"]["state"]["w"], torch.ones(2))
    assert not [p for p in (tmp_path / "sub").iterdir() if p.name != "best.pt"]  # no temporary left


@pytest.mark.parametrize("content", ["text", "pickle", "no-model"])
def test_a_file_that_is_not_a_checkpoint_is_named_without_unsafe_advice(tmp_path, content):
    path = tmp_path / "best.pt"
    if content == "text":
        path.write_text("not a checkpoint\n")
    elif content == "pickle":
        torch.save({"model": NotPlain()}, path, pickle_module=pickle)
    else:
        torch.save({"labels": ["a"]}, path)
    with pytest.raises(CheckpointError, match=f"not a vidseq checkpoint: {path}") as info:
        checkpoints.load(path)
    assert "weights_only" not in str(info.value)
    result = CliRunner().invoke(app, ["evaluate", str(path)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "not a vidseq checkpoint" in lines[0] and "weights_only" not in result.output


def test_a_missing_checkpoint_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "nowhere.pt")])
    assert result.exit_code == 2 and "checkpoint not found" in result.output
