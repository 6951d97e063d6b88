# FIND on MMDetection: the data pieces every FIND config shares (pipeline steps, loaders'
# fixed settings, metrics that read no file). A config composes its pipelines, datasets and
# evaluators from them with `_base_.<name>` (see find_lite0_minilm_find-demo.py).
#
# mmengine builds this file's values when it parses it: nothing here may depend on a variable a
# child config sets (data_root, metainfo, language, tasks, sizes), since overriding that variable
# in the child would not change the pieces built here. Those pieces (FINDSampleTasks, Resize,
# datasets, the metrics that read annotation files) are defined in each config. File backends
# other than the local disk: redefine the loading steps in the child with its backend_args.

# Loading steps. FINDLoadTaskMasks goes right after LoadPanopticAnnotations, before any
# geometric transform, so that flip / resize / crop move the ref and phrase masks too.
load_image = dict(type="LoadImageFromFile", backend_args=None)
load_panoptic = dict(
    type="LoadPanopticAnnotations",
    with_bbox=True,
    with_mask=True,
    with_seg=True,
    backend_args=None,
)
load_task_masks = dict(type="FINDLoadTaskMasks", backend_args=None)
pack_train = dict(type="PackFINDInputs")
# evaluation keeps the sizes the metrics rescale with and the image id of every FIND draw
pack_test = dict(
    type="PackFINDInputs",
    meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor"),
)

# Loader settings without the batch size and workers (per config).
train_sampler = dict(type="InfiniteSampler", shuffle=True)
val_sampler = dict(type="DefaultSampler", shuffle=False)

# Metrics that read only the predictions and find_gt (find_plugin.mmdet.metrics). Referring
# segmentation: FIND's grounding metric (official definitions) beside mmdet's RefSegMetric
# (per-sentence IoU = I / U, cIoU = sum I / sum U; FIND's cIoU_exact / mIoU_exact).
retrieval_metric = dict(type="FINDRetrievalMetric", task="retrieval")
grounding_metrics = [
    dict(type="FINDGroundingMetric", task="grounding"),
    dict(type="RefSegMetric", metric=["cIoU", "mIoU"], prefix="refseg"),
]
entity_metrics = [
    dict(type="FINDGroundingMetric", task="interleave"),
    dict(type="FINDRetrievalMetric", task="interleave_retrieval"),
]
interleave_visual_metric = dict(type="FINDInterleaveRetrievalMetric")
