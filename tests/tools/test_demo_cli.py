"""tools/demo.py: every prompt kind writes an overlay of the input's size (or a ranking of every
gallery image) from a saved tiny checkpoint; bad arguments are clear errors naming them."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tests._util import load_module as _load

ROOT = pathlib.Path(__file__).resolve().parents[2]
H, W = 60, 90


demo_cli = _load("find_demo_cli", ROOT / "tools" / "demo.py")


def _save(path, array):
    Image.fromarray(array).save(path)
    return str(path)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny config yaml + its checkpoint, images, masks and a gallery."""
    from detectron2.modeling import build_model

    from find_plugin.d2 import FINDCheckpointer

    d = tmp_path_factory.mktemp("demo_cli")
    cfg = _load("find_d2_conftest", ROOT / "tests" / "d2" / "conftest.py").tiny_cfg()
    # a dataset registered on import (COCO panoptic metadata), so a subprocess builds it too
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ("find_coco_2017_train_panoptic_caption",), ()
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 128
    (d / "tiny.yaml").write_text(cfg.dump())
    torch.manual_seed(0)
    model = build_model(cfg)
    FINDCheckpointer(model, str(d)).save("model")
    rng = np.random.default_rng(0)
    img = np.zeros((H, W, 3), np.uint8)
    img[:] = (90, 160, 60)
    img[10:40, 20:50] = (200, 120, 40)
    img += rng.integers(0, 20, img.shape, dtype=np.uint8)
    gallery = d / "gallery"
    gallery.mkdir()
    for k in range(3):
        _save(gallery / f"g{k}.png", np.roll(img, 15 * k, axis=1))
    (gallery / "notes.txt").write_text("not an image")
    mask = np.zeros((H, W), np.uint8)
    mask[15:35, 25:45] = 255
    ref = img[::-1].copy()  # the reference: another image (flipped, other size)
    return {
        "dir": d,
        "cfg": str(d / "tiny.yaml"),
        "weights": str(d / "model.pth"),
        "image": _save(d / "a.png", img),
        "ref": _save(d / "ref.jpg", ref[:50]),
        "mask": _save(d / "mask.png", mask),
        "ref_mask": _save(d / "ref_mask.png", mask[:50]),
        "gallery": str(gallery),
    }


def _argv(assets, out, *prompt, opts=()):
    return [
        "--config-file",
        assets["cfg"],
        "--input",
        assets["image"],
        "--output",
        str(out),
        *prompt,
        "--opts",
        "MODEL.WEIGHTS",
        assets["weights"],
        *opts,
    ]


@pytest.fixture(scope="module")
def demo(assets):
    args = demo_cli.get_parser().parse_args(_argv(assets, "x", "--text", "x"))
    return demo_cli.FINDPredictor(demo_cli.setup_cfg(args), config_file=assets["cfg"])


def _run(demo, argv):
    return demo_cli.run(demo_cli.get_parser().parse_args(argv), demo)


def _png(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_checkpoint_is_loaded(demo, assets):
    state = torch.load(assets["weights"], map_location="cpu")["model"]
    key = "interface.query_feat.weight"
    assert torch.equal(demo.model.state_dict()[key], state[key])


def test_classes_panoptic_overlay(demo, assets, tmp_path):
    argv = _argv(assets, tmp_path, "--classes", "dog, grass ,sky", "--stuff-classes", "grass,sky")
    argv[argv.index("--opts") : argv.index("--opts")] = ["--confidence-threshold", "0"]
    (out,) = _run(demo, argv)
    assert out == str(tmp_path / "a.png")
    overlay, image = _png(out), _png(assets["image"])
    assert overlay.shape == image.shape
    assert (overlay != image).any()  # threshold 0: segments are drawn
    # the class bank was rebuilt for the three names (+ background)
    assert demo.model.tasks["generic"].class_names == ["dog", "grass", "sky"]
    assert demo.model.is_thing == [True, False, False]
    assert demo.model._eval_bank.shape[0] == 4


def test_referring_overlay(demo, assets, tmp_path):
    out = tmp_path / "ref.png"
    (written,) = _run(demo, _argv(assets, out, "--text", "the orange box"))
    assert written == str(out) and _png(out).shape == (H, W, 3)
    masks = demo.referring(demo.read(assets["image"]), ["the orange box", "the grass"])
    assert masks.shape == (2, H, W) and masks.dtype == torch.bool


def test_interactive_overlay_shows_the_clicks(demo, assets, tmp_path):
    argv = _argv(
        assets,
        tmp_path,
        "--clicks",
        "30,20;35,25",
        "--negative-clicks",
        "80,50",
        "--scribble",
        assets["mask"],
    )
    (out,) = _run(demo, argv)
    overlay = _png(out)
    assert overlay.shape == (H, W, 3)
    r, g, b = (int(v) for v in overlay[20, 30])
    assert g > 150 and r < 100 and b < 100  # the positive click, green, where it was given
    r, g, b = (int(v) for v in overlay[50, 80])
    assert r > 150 and g < 100 and b < 100  # the negative click, red
    pos = np.zeros((H, W), bool)
    pos[20, 30] = True
    mask = demo.interactive(demo.read(assets["image"]), pos, np.zeros((H, W), bool))
    assert mask.shape == (H, W) and mask.dtype == torch.bool


@pytest.mark.parametrize("reference", ["mask", "box"])
def test_interleave_overlay_with_a_reference_on_another_image(demo, assets, tmp_path, reference):
    ref_arg = ["--reference-mask", assets["ref_mask"]]
    if reference == "box":
        ref_arg = ["--reference-box", "25,15,45,35"]
    prompt = ["--interleave", "a [1] next to <the grass>", "--reference-image", assets["ref"]]
    written = _run(demo, _argv(assets, tmp_path, *prompt, *ref_arg))
    assert sorted(os.path.basename(p) for p in written) == ["a.png", "a_reference.png"]
    assert _png(tmp_path / "a.png").shape == (H, W, 3)
    ref_overlay, ref_image = _png(tmp_path / "a_reference.png"), _png(assets["ref"])
    assert ref_overlay.shape == ref_image.shape
    assert (ref_overlay[15:35, 25:45] != ref_image[15:35, 25:45]).any(-1).all()


def test_interleave_masks_depend_on_the_reference_image(demo, assets):
    sentence, phrases = demo_cli.parse_interleave_prompt("the [1]")
    image, ref = demo.read(assets["image"]), demo.read(assets["ref"], "--reference-image")
    prompt = np.zeros(ref.shape[:2], bool)
    prompt[15:35, 25:45] = True
    a = demo.interleave(image, sentence, phrases, ref, [prompt])
    b = demo.interleave(image, sentence, phrases, np.ascontiguousarray(ref[:, ::-1]), [prompt])
    assert a.shape == b.shape == (1, H, W)
    # (bool masks of an untrained model may agree; the reference reaches the logits)
    task = demo.model.tasks["interleave"]
    calls = []
    orig = task.predict

    def spy(*args, **kwargs):
        out = orig(*args, **kwargs)
        calls.append(out)
        return out

    task.predict = spy
    try:
        demo.interleave(image, sentence, phrases, ref, [prompt])
        demo.interleave(image, sentence, phrases, ref, [prompt])
        demo.interleave(image, sentence, phrases, np.ascontiguousarray(ref[:, ::-1]), [prompt])
    finally:
        del task.predict
    assert torch.equal(calls[0], calls[1])  # seeded: the same prompt, the same output
    assert (calls[0] - calls[2]).abs().max() > 1e-3  # (0.0 when the reference is ignored)


def test_retrieval_ranks_every_gallery_image(demo, assets, tmp_path, capsys):
    argv = _argv(assets, tmp_path, "--retrieve", "an orange box on grass", "--gallery")
    argv.insert(argv.index("--gallery") + 1, assets["gallery"])
    (out,) = _run(demo, argv)
    data = json.loads(pathlib.Path(out).read_text())
    files = sorted(os.path.join(assets["gallery"], f"g{k}.png") for k in range(3))
    assert data["query"] == "an orange box on grass"
    assert sorted(r["file"] for r in data["ranking"]) == files
    assert [r["rank"] for r in data["ranking"]] == [1, 2, 3]
    scores = [r["score"] for r in data["ranking"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    printed = capsys.readouterr().out
    assert all(f in printed for f in files)
    # the score is the cosine of the text and image embeddings
    q = demo.text_embedding("an orange box on grass")
    e = demo.image_embedding(demo.read(data["ranking"][0]["file"]))
    assert scores[0] == pytest.approx(float(torch.nn.functional.cosine_similarity(q, e, 0)), 1e-5)


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "prompt, match",
    [
        (["--text", ""], r"--text is empty"),
        (["--text", "   "], r"--text is empty"),
        ([], r"no prompt given"),
        (["--text", "a", "--classes", "b"], r"one prompt kind per run"),
        (["--classes", "a,,b"], r"--classes"),
        (["--clicks", "3;4"], r"--clicks: '3' is not a point"),
        (["--interleave", "a dog"], r"--interleave: .* marks no entity"),
        (
            ["--interleave", "a [2]", "--reference-image", "REF", "--reference-box", "1,1,5,5"],
            r"uses \[2\] but 1 reference",
        ),
        (["--retrieve", "a dog", "--gallery", "/no/such/folder"], r"--gallery: folder"),
    ],
)
def test_prompt_errors_name_the_argument(assets, tmp_path, prompt, match):
    prompt = [assets["ref"] if p == "REF" else p for p in prompt]
    with pytest.raises(demo_cli.PredictorError, match=match):
        demo_cli.main(_argv(assets, tmp_path, *prompt))


def test_missing_image_names_it(assets, tmp_path):
    argv = _argv(assets, tmp_path, "--text", "a dog")
    argv[argv.index("--input") + 1] = str(tmp_path / "missing.jpg")
    with pytest.raises(
        demo_cli.PredictorError, match=r"--input: file '.*missing\.jpg' does not exist"
    ):
        demo_cli.main(argv)


def test_missing_reference_and_scribble_files_name_them(assets, tmp_path):
    argv = _argv(assets, tmp_path, "--scribble", str(tmp_path / "nope.png"))
    with pytest.raises(demo_cli.PredictorError, match=r"--scribble: file .*nope\.png"):
        demo_cli.main(argv)
    argv = _argv(assets, tmp_path, "--interleave", "[1]", "--reference-mask", assets["mask"])
    with pytest.raises(demo_cli.PredictorError, match=r"--reference-image: file None"):
        demo_cli.main(argv)


def test_clicks_outside_the_image(demo, assets, tmp_path):
    with pytest.raises(
        demo_cli.PredictorError, match=r"--clicks: point \(95, 10\) is outside image"
    ):
        _run(demo, _argv(assets, tmp_path, "--clicks", "10,10;95,10"))
    with pytest.raises(demo_cli.PredictorError, match=r"--negative-clicks: point \(5, -1\)"):
        _run(demo, _argv(assets, tmp_path, "--clicks", "10,10", "--negative-clicks", "5,-1"))


def test_mask_of_another_size(demo, assets, tmp_path):
    # the reference mask is 90x50; the input image is 90x60
    with pytest.raises(
        demo_cli.PredictorError, match=r"--scribble: mask .* is 90x50, its image is 90x60"
    ):
        _run(demo, _argv(assets, tmp_path, "--scribble", assets["ref_mask"]))


def test_checkpoint_of_another_configuration(assets, tmp_path):
    argv = _argv(
        assets, tmp_path, "--text", "a dog", opts=["MODEL.FIND.INTERFACE.DIM_FEEDFORWARD", "48"]
    )
    with pytest.raises(demo_cli.PredictorError) as err:
        demo_cli.main(argv)
    msg = str(err.value)
    assert f"the config {assets['cfg']} does not match the checkpoint {assets['weights']}" in msg
    assert "interface.layers.0." in msg and "(64, 32) vs (48, 32)" in msg


def test_no_checkpoint(assets, tmp_path):
    argv = _argv(assets, tmp_path, "--text", "a dog")
    argv[argv.index("MODEL.WEIGHTS") + 1] = str(tmp_path / "none.pth")
    with pytest.raises(
        demo_cli.PredictorError, match=r"MODEL.WEIGHTS: checkpoint file .* not exist"
    ):
        demo_cli.main(argv)


# ---------------------------------------------------------------------------------- subprocess
def _subprocess(argv):
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(ROOT / "tools" / "demo.py"), *argv]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_subprocess_run_and_error(assets, tmp_path):
    res = _subprocess(_argv(assets, tmp_path / "out.png", "--text", "the orange box"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert _png(tmp_path / "out.png").shape == (H, W, 3)
    assert "out.png" in res.stdout
    res = _subprocess(_argv(assets, tmp_path, "--text", ""))
    assert res.returncode == 2
    assert "demo.py: error: --text is empty" in res.stderr
    assert "Traceback" not in res.stderr
