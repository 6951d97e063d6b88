"""The model-zoo table: name -> (URL, sha256, config, what it is).

``sha256`` is ``None`` where upstream publishes no checksum that could be read here; such files are
downloaded but not verified (the resolver says so in its docs). Keep names stable: configs and users
refer to them as ``zoo://<name>`` or plain ``<name>`` in ``MODEL.WEIGHTS``.
"""

from dataclasses import dataclass
from typing import Dict, Optional

__all__ = ["ZooEntry", "MODEL_ZOO"]

_HF_FIND = "https://huggingface.co/xueyanz/FIND/resolve/main/"


@dataclass(frozen=True)
class ZooEntry:
    url: str
    sha256: Optional[str]
    config: str  # find_plugin.presets.FIND_MODEL_PRESETS name
    layout: str  # "official" (convert with tools/convert_official_checkpoint.py) or "find_plugin"
    description: str


MODEL_ZOO: Dict[str, ZooEntry] = {
    "find_focalt_llama_x640": ZooEntry(
        url=_HF_FIND + "find_focalt_llama_x640.pt",
        sha256=None,
        config="focalt_llama",
        layout="official",
        description="official FIND release: FocalNet-T + X-Decoder pixel decoder, LLaMA-7B (-12)",
    ),
    "find_focall_llama_x640": ZooEntry(
        url=_HF_FIND + "find_focall_llama_x640.pt",
        sha256=None,
        config="focall_llama",
        layout="official",
        description="official FIND release: FocalNet-L + X-Decoder pixel decoder, LLaMA-7B (-12)",
    ),
}
