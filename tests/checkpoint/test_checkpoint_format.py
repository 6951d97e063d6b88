"""find_plugin checkpoint format: atomic versioned writes, migration, and loud key mismatches."""

import os

import pytest
import torch

from find_plugin.checkpoint import (
    FORMAT_VERSION,
    CheckpointFormatError,
    IncompatibleCheckpointError,
    load_checkpoint,
    load_state_dict_checked,
    save_checkpoint,
)


def _model():
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))


def test_round_trip_is_exact_and_versioned(tmp_path):
    m = _model()
    path = save_checkpoint(str(tmp_path / "m.pth"), m.state_dict(), meta={"iter": 7})
    obj = load_checkpoint(path)
    assert obj["format_version"] == FORMAT_VERSION and obj["meta"] == {"iter": 7}
    m2 = _model()
    load_state_dict_checked(m2, obj["model"], source=path)
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])
    # plain tensors: loadable with weights_only=True
    torch.load(path, weights_only=True)


def test_bare_state_dict_is_migrated_with_warning(tmp_path):
    path = str(tmp_path / "old.pth")
    torch.save(_model().state_dict(), path)
    with pytest.warns(UserWarning, match="migrating checkpoint from format_version 0"):
        obj = load_checkpoint(path)
    assert obj["format_version"] == FORMAT_VERSION and "0.weight" in obj["model"]


def test_newer_or_foreign_format_is_refused(tmp_path):
    path = str(tmp_path / "new.pth")
    torch.save({"format": "find_plugin", "format_version": FORMAT_VERSION + 1, "model": {}}, path)
    with pytest.raises(CheckpointFormatError, match="newer than this find_plugin"):
        load_checkpoint(path)
    torch.save({"format": "other", "model": {}}, path)
    with pytest.raises(CheckpointFormatError, match="format 'other'"):
        load_checkpoint(path)


def test_corrupted_file_is_reported(tmp_path):
    path = str(tmp_path / "bad.pth")
    save_checkpoint(path, _model().state_dict())
    with open(path, "r+b") as f:
        f.truncate(40)
    with pytest.raises(CheckpointFormatError, match="not a readable tensor checkpoint"):
        load_checkpoint(path)


def test_failed_write_keeps_the_existing_file(tmp_path):
    path = str(tmp_path / "m.pth")
    save_checkpoint(path, _model().state_dict(), meta={"iter": 1})
    with pytest.raises(CheckpointFormatError):
        save_checkpoint(path, {"w": "not a tensor"})  # refused before any file is opened
    assert load_checkpoint(path)["meta"] == {"iter": 1}
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")] == []


def test_write_failing_midway_removes_temp_and_keeps_destination(tmp_path, monkeypatch):
    """The serialiser fails after writing part of the new file (disk full, killed worker...)."""
    path = tmp_path / "m.pth"
    save_checkpoint(str(path), _model().state_dict(), meta={"iter": 1})
    before = path.read_bytes()
    temp_files = []

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        f.flush()
        temp_files.extend(p for p in os.listdir(tmp_path) if p.startswith(".tmp-"))
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(str(path), _model().state_dict(), meta={"iter": 2})
    monkeypatch.undo()
    assert len(temp_files) == 1  # the write did start, in a temporary file next to the target
    assert os.listdir(tmp_path) == ["m.pth"]  # ... which is gone
    assert path.read_bytes() == before  # the old checkpoint is intact, byte for byte
    assert load_checkpoint(str(path))["meta"] == {"iter": 1}


def test_mismatches_are_listed_not_skipped():
    m = _model()
    sd = dict(m.state_dict())
    sd.pop("1.bias")
    sd["0.weight"] = torch.zeros(5, 3)
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(IncompatibleCheckpointError) as err:
        load_state_dict_checked(_model(), sd, source="ckpt.pth")
    msg = str(err.value)
    assert "1.bias" in msg and "extra.weight" in msg and "0.weight: (5, 3) vs (4, 3)" in msg
    # Allowed-missing prefixes are returned, not raised.
    sd = dict(m.state_dict())
    sd.pop("1.bias")
    assert load_state_dict_checked(_model(), sd, allow_missing=["1."]) == ["1.bias"]
