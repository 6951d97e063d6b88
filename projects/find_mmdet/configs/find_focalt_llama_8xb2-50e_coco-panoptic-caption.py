# FIND Focal-T + LLaMA-7B token features on COCO (the official find_focalt_llama_x640 recipe;
# detectron2: configs/find_focalt.yaml): frozen FocalNet-T and X-Decoder pixel decoder (weights:
# model.init_cfg or load_from with an X-Decoder / FIND checkpoint, see tools/mmdet_test.py),
# frozen LLaMA-7B (hidden_states[-12]), the 512-d / 9-layer / 100-proposal interface trained for
# 50 epochs at 18 images per step.
#
#   python tools/mmdet_train.py \
#       projects/find_mmdet/configs/find_focalt_llama_8xb2-50e_coco-panoptic-caption.py \
#       --cfg-options model.language.path=/path/to/llama-7b
#   python tools/mmdet_test.py CONFIG find_focalt_llama_x640 --cfg-options model.language.path=...
#
# Data: $DETECTRON2_DATASETS/coco/ in detectron2's layout (panoptic PNGs in coco/panoptic_*2017/,
# annotations in coco/annotations/, RefCOCOg in refcocog/), shared with the detectron2 side.
# Trains every task on every image as detectron2's find_coco_2017_train_joined: COCO train2017
# panoptic + captions + RefCOCOg (umd) train refs + COCO-Entity train sentences, joined per image
# (generic, grounding, interactive, retrieval, interleave). Validates the sets of the detectron2
# config's DATASETS.TEST, one FINDConcatDataset + mmdet's MultiDatasetsEvaluator, metrics named
# <set>/<metric>/<name>: coco_panoptic_val2017 (PQ, mask AP, mIoU, interactive NoC/mIoU,
# caption retrieval), refcocog_umd_val (grounding cIoU/mIoU, and mmdet's RefSegMetric),
# coco_entity_val2017 and coco_entity_val2017_long (interleave grounding + interleave retrieval),
# karpathy_test (image-text retrieval).
_base_ = ["./_base_/find_runtime.py", "./_base_/find_data.py"]

data_root = "{{$DETECTRON2_DATASETS:datasets}}/"
backend_args = None

metainfo = "CocoPanopticDataset"  # the 133 COCO panoptic classes, things first
language = dict(
    path="",
    kind="decoder",
    feature_layer=-12,
    dtype="float16",
    cache_dir="datasets/find_text_cache/llama7b",
)
find_tasks = dict(
    generic=dict(),
    grounding=dict(max_sentences=4),
    interactive=dict(max_prompts=9, correction_prob=0.5),
    retrieval=dict(),
    interleave=dict(max_phrases=6, visual_prob=0.5),
    interleave_retrieval=dict(),
    interleave_retrieval_visual=dict(
        visual_prob=0.5
    ),  # evaluation only (TASKS.INTERLEAVE_VISUAL_PROB)
)
train_tasks = ["generic", "grounding", "interactive", "retrieval", "interleave"]
seed = 0

model = dict(
    type="FINDDetector",
    data_preprocessor=_base_.data_preprocessor,
    # FocalNet-T (focal_dw), find_plugin.presets.FOCALNET_VARIANTS['focalt']
    backbone=dict(
        type="FINDFocalNet",
        style="focal_dw",
        embed_dim=96,
        depths=[2, 2, 6, 2],
        focal_levels=[3, 3, 3, 3],
        focal_windows=[3, 3, 3, 3],
        patch_size=4,
        mlp_ratio=4.0,
        drop_rate=0.0,
        drop_path_rate=0.3,
        patch_norm=True,
        use_conv_embed=True,
        use_postln=True,
        use_postln_in_modulation=False,
        scaling_modulator=True,
        use_layerscale=True,
        out_indices=[0, 1, 2, 3],
    ),
    # X-Decoder transformer_encoder_fpn (PIXEL_DECODER_PRESET) and the official interface
    # (INTERFACE_PRESET): 512-d, 9 layers, 100 proposals, LLaMA-7B features (4096-d)
    pixel_decoder=dict(conv_dim=512, mask_dim=512, transformer_enc_layers=6),
    interface=dict(hidden_dim=512, num_layers=9, num_queries=100, dim_text=4096),
    metainfo=metainfo,
    language=language,
    tasks=find_tasks,
    train_tasks=train_tasks,
    criterion=dict(num_points=12544, matcher_num_points=12544),
    test_cfg=dict(object_mask_threshold=0.8, overlap_threshold=0.8, top_k=100, max_clicks=1),
    seed=seed,
)

# Large-scale jitter 1024 (scale 0.1..2.0), as detectron2's find_panoptic_lsj mapper.
train_pipeline = [
    _base_.load_image,
    _base_.load_panoptic,
    _base_.load_task_masks,
    dict(type="RandomFlip", prob=0.5),
    dict(type="RandomResize", scale=(1024, 1024), ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(
        type="RandomCrop",
        crop_size=(1024, 1024),
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
    _base_.pack_train,
]
# Shortest edge 640, longest at most 1024 (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST); annotations are
# loaded after the resize, at the original size, for the metrics. One pipeline per validation
# set: its tasks are the ones the detectron2 dataset declares (find_eval_tasks).
test_resize = [_base_.load_image, dict(type="Resize", scale=(1024, 640), keep_ratio=True)]
load_panoptic = _base_.load_panoptic
load_task_masks = _base_.load_task_masks
pack_test = _base_.pack_test
sample_test = dict(
    type="FINDSampleTasks",
    task_options=find_tasks,
    metainfo=metainfo,
    language=language,
    training=False,
    seed=seed,
)
panoptic_test_pipeline = test_resize + [
    load_panoptic,
    dict(sample_test, tasks=["generic", "interactive", "retrieval"]),
    pack_test,
]
refs_test_pipeline = test_resize + [
    load_task_masks,
    dict(sample_test, tasks=["grounding"]),
    pack_test,
]
entity_test_pipeline = test_resize + [
    load_panoptic,
    load_task_masks,
    dict(sample_test, tasks=["interleave", "interleave_retrieval"]),
    pack_test,
]
retrieval_test_pipeline = test_resize + [dict(sample_test, tasks=["retrieval"]), pack_test]
# interleave retrieval with visual references: a phrase's reference image is loaded and resized
# as the query image (reference_pipeline)
interleave_visual_test_pipeline = test_resize + [
    load_panoptic,
    load_task_masks,
    dict(
        sample_test,
        tasks=["interleave_retrieval_visual"],
        reference_pipeline=test_resize,
        backend_args=backend_args,
    ),
    pack_test,
]
test_pipeline = panoptic_test_pipeline

dataset_type = "FINDCocoPanopticDataset"
train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=_base_.train_sampler,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file="coco/annotations/panoptic_train2017.json",
        caption_ann_file="coco/annotations/captions_train2017.json",
        refs_file="refcocog/refs(umd).p",
        refs_instances_file="refcocog/instances.json",
        refs_split="train",
        entity_ann_file="coco/annotations/entity_train2017.json",
        data_prefix=dict(img="coco/train2017/", seg="coco/panoptic_train2017/"),
        filter_cfg=dict(filter_empty_gt=False),
        pipeline=train_pipeline,
        backend_args=backend_args,
    ),
)
coco_val = dict(
    data_root=data_root,
    ann_file="coco/annotations/panoptic_val2017.json",
    data_prefix=dict(img="coco/val2017/", seg="coco/panoptic_val2017/"),
    test_mode=True,
    backend_args=backend_args,
)
val_sets = [
    dict(
        coco_val,
        type=dataset_type,
        caption_ann_file="coco/annotations/captions_val2017.json",
        require_captions=True,
        pipeline=panoptic_test_pipeline,
    ),
    dict(
        type="FINDRefCocoDataset",
        data_root=data_root,
        ann_file="refcocog/refs(umd).p",
        instances_file="refcocog/instances.json",
        split="val",
        data_prefix=dict(img="coco/"),
        test_mode=True,
        pipeline=refs_test_pipeline,
    ),
    dict(
        coco_val,
        type=dataset_type,
        entity_ann_file="coco/annotations/entity_val2017.json",
        images_with="entity_info",
        pipeline=entity_test_pipeline,
    ),
    dict(
        coco_val,
        type=dataset_type,
        entity_ann_file="coco/annotations/entity_val2017_long.json",
        images_with="entity_info",
        pipeline=entity_test_pipeline,
    ),
    dict(
        type="FINDKarpathyDataset",
        data_root=data_root,
        ann_file="coco/annotations/dataset_coco.json",
        splits=["test"],
        data_prefix=dict(img="coco/"),
        test_mode=True,
        pipeline=retrieval_test_pipeline,
    ),
]
# find_coco_interleave_val2017 of the detectron2 side (configs/eval/coco_interleave_val2017.yaml):
# not among the default sets, its file is built by tools/build_interleave_references.py. To add
# it: val_sets.append(interleave_val_set), val_set_names.append("coco_interleave_val2017") and
# a FINDDatasetMetrics(dataset_index=5, metrics=[_base_.interleave_visual_metric]).
interleave_val_set = dict(
    coco_val,
    type=dataset_type,
    entity_ann_file="coco/annotations/interleave_val2017.json",
    images_with="entity_info",
    pipeline=interleave_visual_test_pipeline,
)
val_set_names = [
    "coco_panoptic_val2017",
    "refcocog_umd_val",
    "coco_entity_val2017",
    "coco_entity_val2017_long",
    "karpathy_test",
]
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=_base_.val_sampler,
    dataset=dict(type="FINDConcatDataset", datasets=val_sets),
)
test_dataloader = val_dataloader

panoptic_metrics = [
    dict(
        type="CocoPanopticMetric",
        ann_file=data_root + "coco/annotations/panoptic_val2017.json",
        seg_prefix=data_root + "coco/panoptic_val2017/",
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
    _base_.retrieval_metric,
]
# FIND's grounding metric (official definitions) and mmdet's RefSegMetric side by side
refs_metrics = _base_.grounding_metrics
entity_metrics = _base_.entity_metrics
val_evaluator = dict(
    type="MultiDatasetsEvaluator",
    dataset_prefixes=val_set_names,
    metrics=[
        dict(type="FINDDatasetMetrics", dataset_index=0, metrics=panoptic_metrics),
        dict(type="FINDDatasetMetrics", dataset_index=1, metrics=refs_metrics),
        dict(type="FINDDatasetMetrics", dataset_index=2, metrics=entity_metrics),
        dict(type="FINDDatasetMetrics", dataset_index=3, metrics=entity_metrics),
        dict(
            type="FINDDatasetMetrics",
            dataset_index=4,
            metrics=[_base_.retrieval_metric],
        ),
    ],
)
test_evaluator = val_evaluator

# 50 epochs of train2017 at 18 images / step = 368750 steps, lr x0.1 at 0.889 and 0.963 of them
# (SOLVER of Base-FIND.yaml / find_focalt.yaml), grad clip 0.01, AMP (CUDA) as the official run.
max_iters = 368750
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(type="AmpOptimWrapper", loss_scale="dynamic")
param_scheduler = [
    dict(type="MultiStepLR", by_epoch=False, milestones=[327819, 355106], gamma=0.1),
]
# lr 1e-4 is for 18 images per step (e.g. 9 GPUs x 2): --auto-scale-lr rescales it.
auto_scale_lr = dict(enable=False, base_batch_size=18)
default_hooks = dict(
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=5000, max_keep_ckpts=3)
)
randomness = dict(seed=seed)
