"""tools/precompute_text_features.py: input formats, clear errors, cache filling."""

import json
import os

import pytest

from find_plugin.encoders.language import TextTokenEncoder
from tests._util import load_module

_TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "precompute_text_features.py")


@pytest.fixture(scope="module")
def tool():
    return load_module("lang_precompute_tool", _TOOL)


def _write(path, data):
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return str(path)


def test_formats(tool, tmp_path):
    txt = _write(tmp_path / "t.txt", "a cat\n\n  two dogs  \n")
    assert tool.load_texts(txt) == ["a cat", "two dogs"]
    coco = _write(
        tmp_path / "c.json",
        {"images": [], "annotations": [{"caption": "a cat"}, {"caption": "a dog"}]},
    )
    assert tool.load_texts(coco) == ["a cat", "a dog"]
    bench = {"annotations": [{"image_id": 1, "sentence": "a man with a flag", "phrase": []}]}
    assert tool.load_texts(_write(tmp_path / "e.json", bench)) == ["a man with a flag"]
    refs = [{"sentences": [{"sent": "left dog", "raw": "Left dog"}, {"raw": "the cat"}]}]
    assert tool.load_texts(_write(tmp_path / "r.json", refs)) == ["left dog", "the cat"]
    refs2 = {"annotations": [{"sentences": [{"sent": "blue sky"}]}]}
    assert tool.load_texts(_write(tmp_path / "r2.json", refs2)) == ["blue sky"]
    assert tool.load_texts(coco, "txt")[0].startswith("{")


def test_bad_inputs_name_file_and_key(tool, tmp_path):
    with pytest.raises(tool.InputError, match="no such file"):
        tool.load_texts(str(tmp_path / "missing.json"))
    bad = _write(tmp_path / "bad.json", "{not json")
    with pytest.raises(tool.InputError, match="bad.json: not valid json"):
        tool.load_texts(bad)
    bench = _write(tmp_path / "e.json", {"annotations": [{"sentence": "ok"}, {"sentence": 3}]})
    with pytest.raises(tool.InputError, match=r"e.json: annotations\[1\].sentence"):
        tool.load_texts(bench)
    nokey = _write(tmp_path / "n.json", {"images": []})
    with pytest.raises(tool.InputError, match="n.json.*'annotations'"):
        tool.load_texts(nokey)
    unknown = _write(tmp_path / "u.json", {"annotations": [{"bbox": [0, 0, 1, 1]}]})
    with pytest.raises(tool.InputError, match="u.json: cannot tell the format"):
        tool.load_texts(unknown)
    refs = _write(tmp_path / "r.json", [{"sentences": [{"tokens": []}]}])
    with pytest.raises(tool.InputError, match=r"refs\[0\].sentences\[0\]"):
        tool.load_texts(refs)
    coco = _write(tmp_path / "c.json", {"annotations": [{"sentence": "x"}]})
    with pytest.raises(tool.InputError, match=r"annotations\[0\].caption"):
        tool.load_texts(coco, "coco-captions")


def test_main_fills_cache(tool, tmp_path, lang_tiny_llama_dir, capsys):
    bench = {"annotations": [{"sentence": "a cat on the couch"}, {"sentence": "two dogs"}]}
    src = _write(tmp_path / "entity_val.json", bench)
    txt = _write(tmp_path / "more.txt", "two dogs\na red flag\n")
    cache = tmp_path / "cache"
    args = [
        "--model",
        lang_tiny_llama_dir,
        "--layer",
        "-3",
        "--max-length",
        "20",
        "--cache-dir",
        str(cache),
        "--input",
        src,
        "--input",
        txt,
        "--batch-size",
        "2",
    ]
    assert tool.main(args) == 0
    out = capsys.readouterr().out
    assert "texts: 4 (3 unique) | computed: 3 | already cached: 0" in out
    assert tool.main(args) == 0
    assert "computed: 0 | already cached: 3" in capsys.readouterr().out
    # The adapter then reads those entries.
    enc = TextTokenEncoder(
        model_path=lang_tiny_llama_dir, feature_layer=-3, max_length=20, cache_dir=str(cache)
    )
    assert enc._encode(["a red flag", "two dogs"], None)[1:] == (2, 0)


def test_main_errors(tool, tmp_path, capsys):
    txt = _write(tmp_path / "t.txt", "a cat\n")
    rc = tool.main(
        ["--model", "meta-llama/Llama-2-7b-hf", "--cache-dir", str(tmp_path), "--input", txt]
    )
    assert rc == 2
    assert "huggingface-cli download meta-llama/Llama-2-7b-hf" in capsys.readouterr().err
    rc = tool.main(
        ["--model", str(tmp_path), "--cache-dir", str(tmp_path), "--input", str(tmp_path / "x.txt")]
    )
    assert rc == 2 and "x.txt: no such file" in capsys.readouterr().err
