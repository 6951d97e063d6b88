"""FIND for MMDetection 3.x: import this package to register FIND's names in mmdet's registries.

Configs load it with ``custom_imports = dict(imports=['find_plugin.mmdet'],
allow_failed_imports=False)``. Registered (all names carry the FIND prefix):

* ``MODELS``: ``FINDDetector`` (:mod:`.detector`), ``FINDFocalNet``, ``FINDEfficientNetLite0``,
  ``FINDTransformerEncoderPixelDecoder``, ``FINDInterface`` (:mod:`.components`);
* ``TRANSFORMS``: ``FINDLoadTaskMasks``, ``FINDSampleTasks``, ``PackFINDInputs``
  (:mod:`.transforms`);
* ``DATASETS``: ``FINDCocoPanopticDataset``, ``FINDRefCocoDataset``, ``FINDKarpathyDataset``,
  ``FINDConcatDataset`` (:mod:`.datasets`);
* ``METRICS``: ``FINDGroundingMetric``, ``FINDInteractiveMetric``, ``FINDRetrievalMetric``
  (:mod:`.metrics`), ``FINDDatasetMetrics`` (:mod:`.multi_datasets`: several validation sets
  with mmdet's ``MultiDatasetsEvaluator``);
* ``HOOKS``: ``FINDTrainingStateHook`` (:mod:`.hooks`).
"""

try:
    import mmdet  # noqa: F401
    import mmengine  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"find_plugin.mmdet needs MMDetection 3.x and mmengine ({e}); install them with "
        "pip install -e '.[mmdet]' on top of an mmcv 2.1 built with its ops"
    ) from e

from . import (  # noqa: F401,E402
    components,
    datasets,
    detector,
    hooks,
    metrics,
    multi_datasets,
    transforms,
)
from .detector import FINDDetector  # noqa: E402
from .panoptic import INSTANCE_OFFSET, core_to_mmdet_panoptic, mmdet_to_core_panoptic  # noqa: E402
from .transforms import FINDLoadTaskMasks, FINDSampleTasks, PackFINDInputs  # noqa: E402

__all__ = [
    "FINDDetector",
    "FINDLoadTaskMasks",
    "FINDSampleTasks",
    "INSTANCE_OFFSET",
    "PackFINDInputs",
    "core_to_mmdet_panoptic",
    "mmdet_to_core_panoptic",
]
