"""Offline-only model resolution: hub ids and missing paths give clear, actionable errors."""

import pytest

from find_plugin.encoders.language import (
    HubIdNotAllowedError,
    LanguageEncoderError,
    ModelNotFoundError,
    TextTokenEncoder,
    detect_kind,
    resolve_local_model_path,
)


def test_hub_id_rejected_with_download_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("FIND_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HubIdNotAllowedError) as info:
        TextTokenEncoder(model_path="huggyllama/llama-7b")
    msg = str(info.value)
    assert "model_path='huggyllama/llama-7b'" in msg
    assert "huggingface-cli download huggyllama/llama-7b --local-dir" in msg
    assert str(tmp_path / "models" / "llama-7b") in msg
    # Also a FileNotFoundError, so generic handlers catch it.
    assert isinstance(info.value, FileNotFoundError)


def test_missing_directory(tmp_path):
    missing = tmp_path / "nowhere" / "llama"
    with pytest.raises(ModelNotFoundError, match="no such directory") as info:
        resolve_local_model_path(str(missing), argument="MODEL.TEXT.NAME")
    assert "MODEL.TEXT.NAME" in str(info.value) and str(missing) in str(info.value)
    assert not isinstance(info.value, HubIdNotAllowedError)


def test_existing_relative_org_name_dir_is_accepted(tmp_path, monkeypatch):
    (tmp_path / "org" / "name").mkdir(parents=True)
    (tmp_path / "org" / "name" / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert resolve_local_model_path("org/name", argument="p") == str(tmp_path / "org" / "name")


def test_file_and_folder_without_config(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        resolve_local_model_path(str(f), argument="model_path")
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_local_model_path(str(tmp_path), argument="model_path")
    with pytest.raises(ModelNotFoundError, match="required"):
        resolve_local_model_path("", argument="model_path")


def test_detect_kind():
    assert detect_kind("llama") == "decoder"
    assert detect_kind("bert") == "encoder"
    assert detect_kind("clip") == "clip"
    assert detect_kind("bert", override="decoder") == "decoder"
    with pytest.raises(LanguageEncoderError, match="kind="):
        detect_kind("t5")
    with pytest.raises(ValueError, match="kind"):
        detect_kind("llama", override="seq2seq")
