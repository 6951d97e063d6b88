"""The detectron2 meta-architecture ``FIND``: configs build, a training step, evaluation outputs."""

import glob
import os
import pathlib

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from find_plugin.d2 import FIND, add_find_config
from find_plugin.tasks import sample_record
from tests._util import load_module

C = load_module("_d2_conftest", pathlib.Path(__file__).with_name("conftest.py"))
TINY_META, register_tiny_metadata, tiny_cfg = C.TINY_META, C.register_tiny_metadata, C.tiny_cfg

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
CONFIG_DIR = os.path.join(ROOT, "configs")
H, W = 64, 96


def _box(y0, y1, x0, x1):
    m = torch.zeros(H, W, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def make_record(shift=0):
    person, dog, sky = _box(16, 56, 8 + shift, 30 + shift), _box(34, 60, 50, 90), _box(0, 12, 0, W)
    sentence = "a person next to a dog"
    return {
        "image_size": (H, W),
        "labels": torch.tensor([0, 1, 2]),
        "masks": torch.stack([person, dog, sky]),
        "captions": ["a person and a dog", "a dog outside"],
        "groundings": [{"text": "the person", "masks": person[None]}],
        "entities": [
            {
                "sentence": sentence,
                "phrases": [
                    {"start": 0, "end": 8, "mask": person},
                    {"start": 17, "end": 22, "mask": dog},
                ],
            }
        ],
    }


def make_inputs(model, names, *, training, seed=0):
    """Mapper-equivalent inputs: image + find_samples (+ find_gt in evaluation)."""
    g = torch.Generator().manual_seed(seed)
    tasks = [model.tasks[n] for n in names]
    out = []
    for i in range(2):
        rec = make_record(shift=4 * i)
        x = {
            "image": torch.randint(0, 255, (3, H, W), generator=g, dtype=torch.uint8),
            "height": H * 2,
            "width": W * 2,
            "image_id": i,
            "find_samples": sample_record(
                tasks, rec, generator=g, encode_text=model.encode_text, training=training
            ),
        }
        if not training:
            up = torch.nn.functional.interpolate(rec["masks"][None].float(), size=(2 * H, 2 * W))
            x["find_gt"] = {"interactive_masks": up[0] > 0.5}
        out.append(x)
    return out


def test_every_config_merges_and_builds():
    paths = sorted(glob.glob(os.path.join(CONFIG_DIR, "*.yaml")))
    paths += sorted(glob.glob(os.path.join(ROOT, "projects", "*", "configs", "*.yaml")))
    assert {os.path.basename(p) for p in paths} >= {
        "find_R50_minilm.yaml",
        "Base-FIND.yaml",
        "find_focalt.yaml",
        "find_focall.yaml",
        "find_focalt_clip.yaml",
        "find_demo.yaml",
    }
    for path in paths:
        cfg = get_cfg()
        add_find_config(cfg)
        cfg.merge_from_file(path)
        cfg.DATASETS.TRAIN = (register_tiny_metadata(),)
        cfg.MODEL.DEVICE = "meta"
        cfg.MODEL.FIND.LANGUAGE.PACKAGE = ""  # the text model loads real weights: not on meta
        with torch.device("meta"):
            model = build_model(cfg)  # shapes only: the full-size models are large
        assert isinstance(model, FIND), path
        n = sum(p.numel() for p in model.interface.parameters())
        if os.path.basename(path) == "find_demo.yaml":  # the CPU main job's 128-d interface
            assert 0.3e6 < n < 2e6, (path, n)
        else:
            assert n > 30e6, (path, n)  # official width: ~40 M interface parameters
        # the frozen parts stay frozen; the interface trains (and the pixel decoder where asked)
        assert not any(p.requires_grad for p in model.backbone.parameters())
        trains_decoder = not cfg.MODEL.FIND_VISION.FREEZE_PIXEL_DECODER
        assert all(p.requires_grad == trains_decoder for p in model.pixel_decoder.parameters())


def test_unknown_yaml_key_and_unknown_task_fail_clearly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        '_BASE_: "%s"\nMODEL:\n  FIND:\n    NOPE: 1\n'
        % os.path.abspath(os.path.join(CONFIG_DIR, "Base-FIND.yaml"))
    )
    cfg = get_cfg()
    add_find_config(cfg)
    with pytest.raises(KeyError, match="NOPE"):
        cfg.merge_from_file(str(bad))
    with pytest.raises(KeyError, match="unknown FIND task 'segment_anything'"):
        build_model(tiny_cfg(**{"MODEL.FIND.TASKS.TRAIN": ["generic", "segment_anything"]}))


def test_training_step_returns_every_task_loss_and_trains_only_the_interface(tiny_model):
    model = tiny_model.train()
    inputs = make_inputs(model, [t.name for t in model.train_tasks], training=True)
    with EventStorage():
        losses = model(inputs)
    groups = {k[len("loss_") :].rsplit("_", 1)[0] for k in losses if not k[-1].isdigit()}
    assert groups == {"mask", "grounding", "spatial", "interleave", "retrieval"}
    final = {k for k in losses if not k[-1].isdigit()}
    assert {"loss_mask_ce", "loss_grounding_ce", "loss_interleave_itc"} <= final
    assert "loss_mask_ce_0" in losses and "loss_mask_ce_1" in losses  # 2 layers + initial
    assert all(torch.isfinite(v) for v in losses.values())
    model.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        if name.startswith(("backbone.", "pixel_decoder.")):
            assert p.grad is None, name
    assert model.interface.lang_proj.grad.abs().sum() > 0
    assert model.interface.query_feat.weight.grad.abs().sum() > 0
    # the class query refreshed the bank rows of the sampled classes
    assert model._bank_ready and model.class_bank.embeddings.abs().sum() > 0


def test_evaluation_outputs_of_every_task(tiny_model):
    model = tiny_model.eval()
    names = ["generic", "grounding", "interleave", "interactive", "retrieval"]
    inputs = make_inputs(model, names, training=False)
    with torch.no_grad():
        out = model(inputs)
    assert len(out) == 2
    for r in out:
        assert r["sem_seg"].shape == (3, 2 * H, 2 * W)
        seg, info = r["panoptic_seg"]
        assert seg.shape == (2 * H, 2 * W)
        inst = r["instances"]
        assert inst.image_size == (2 * H, 2 * W) and len(inst) <= 100
        assert inst.pred_boxes.tensor.shape == (len(inst), 4)
        assert r["grounding_masks"].shape == (1, 2 * H, 2 * W)
        assert r["interleave_masks"].shape == (2, 2 * H, 2 * W)
        assert r["interactive_ious"].shape == (3, 1)
        assert r["image_embedding"].shape == (32,) and r["caption_embeddings"].shape == (2, 32)


def test_missing_samples_name_the_input(tiny_model):
    model = tiny_model.eval()
    with pytest.raises(KeyError, match="no 'find_samples'"):
        model([{"image": torch.zeros(3, H, W, dtype=torch.uint8), "image_id": 7}])


def test_tiny_metadata_is_registered():
    assert register_tiny_metadata() == TINY_META


def test_optimizer_groups_skip_frozen_and_decay_only_weights():
    from find_plugin.d2.solver import build_find_optimizer

    cfg = tiny_cfg(**{"MODEL.FIND.LANGUAGE.PACKAGE": ""})
    tiny_model = build_model(cfg)  # its own model: the step below changes the weights
    opt = build_find_optimizer(cfg, tiny_model)
    names = {g["name"]: g["weight_decay"] for g in opt.param_groups}
    trainable = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert set(names) == trainable and not any(n.startswith("backbone.") for n in names)
    assert names["interface.query_feat.weight"] == 0.0
    assert names["interface.logit_scale"] == 0.0
    assert names["interface.heads.decoder_norm.weight"] == 0.0
    assert names["interface.layers.0.ffn.linear1.weight"] == pytest.approx(0.05)
    assert "FullModelGradientClipping" in type(opt).__name__
    # full-model clipping: the global gradient norm after step's clipping is <= 0.01
    for p in tiny_model.parameters():
        if p.requires_grad:
            p.grad = torch.ones_like(p)
    opt.step()
    total = torch.norm(
        torch.stack([p.grad.norm() for p in tiny_model.parameters() if p.grad is not None])
    )
    assert total.item() == pytest.approx(0.01, rel=1e-3)
    opt.zero_grad(set_to_none=True)


def test_model_and_mappers_share_one_text_encoder():
    from find_plugin.d2 import build_find_text_encoder

    cfg = tiny_cfg()
    first, second = build_find_text_encoder(cfg), build_find_text_encoder(cfg)
    assert first is second  # loaded once per process (a LLaMA-7B is not loaded twice)
    cfg.MODEL.FIND.LANGUAGE.MAX_LENGTH = 16
    assert build_find_text_encoder(cfg) is not first


def test_samples_of_an_unbuilt_task_name_it(tiny_model):
    model = tiny_model.eval()
    x = {"image": torch.zeros(3, H, W, dtype=torch.uint8), "find_samples": {"toy_missing": {}}}
    with pytest.raises(KeyError, match="tasks \\['toy_missing'\\]"):
        model([x])
