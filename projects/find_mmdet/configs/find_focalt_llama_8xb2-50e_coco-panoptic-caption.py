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
# (generic, grounding, interactive, retrieval, interleave); evaluates PQ, mIoU, mask AP,
# interactive NoC/mIoU and COCO-val caption retrieval. (RefCOCOg val, COCO-Entity and Karpathy
# evaluation: the detectron2 configs.)
_base_ = ["./_base_/find_runtime.py"]

data_root = "{{$DETECTRON2_DATASETS:datasets}}/coco/"
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
)
train_tasks = ["generic", "grounding", "interactive", "retrieval", "interleave"]
eval_tasks = ["generic", "interactive", "retrieval"]
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
    dict(type="LoadImageFromFile", backend_args=backend_args),
    dict(
        type="LoadPanopticAnnotations",
        with_bbox=True,
        with_mask=True,
        with_seg=True,
        backend_args=backend_args,
    ),
    # the ref / entity masks join gt_masks so that flip, resize and crop move them too
    dict(type="FINDLoadTaskMasks", backend_args=backend_args),
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
    dict(type="PackFINDInputs"),
]
# Shortest edge 640, longest at most 1024 (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST).
test_pipeline = [
    dict(type="LoadImageFromFile", backend_args=backend_args),
    dict(type="Resize", scale=(1024, 640), keep_ratio=True),
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
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file="annotations/panoptic_train2017.json",
        caption_ann_file="annotations/captions_train2017.json",
        refs_file="../refcocog/refs(umd).p",
        refs_instances_file="../refcocog/instances.json",
        refs_split="train",
        entity_ann_file="annotations/entity_train2017.json",
        data_prefix=dict(img="train2017/", seg="panoptic_train2017/"),
        filter_cfg=dict(filter_empty_gt=False),
        pipeline=train_pipeline,
        backend_args=backend_args,
    ),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file="annotations/panoptic_val2017.json",
        caption_ann_file="annotations/captions_val2017.json",
        require_captions=True,
        data_prefix=dict(img="val2017/", seg="panoptic_val2017/"),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args,
    ),
)
test_dataloader = val_dataloader

val_evaluator = [
    dict(
        type="CocoPanopticMetric",
        ann_file=data_root + "annotations/panoptic_val2017.json",
        seg_prefix=data_root + "panoptic_val2017/",
        backend_args=backend_args,
    ),
    dict(type="SemSegMetric", iou_metrics=["mIoU"], prefix="sem_seg"),
    dict(
        type="CocoMetric",
        metric=["segm"],
        ann_file=data_root + "annotations/instances_val2017.json",
        backend_args=backend_args,
    ),
    dict(type="FINDInteractiveMetric", max_clicks=1),
    dict(type="FINDRetrievalMetric", task="retrieval"),
]
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
