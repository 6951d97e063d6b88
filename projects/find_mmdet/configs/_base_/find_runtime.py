# FIND on MMDetection: runtime shared by every FIND config (mmdet's default runtime + FIND's
# registrations, optimizer and hooks). Only the interface (+ lang_proj, logit_scale) and, where a
# config says so, the pixel decoder train; the frozen parts have requires_grad False.
_base_ = ["mmdet::_base_/default_runtime.py"]

# Registers FINDDetector, FINDSampleTasks, PackFINDInputs, FINDCocoPanopticDataset, the FIND
# metrics and hooks in mmdet's registries. Without it mmdet cannot find the FIND types.
custom_imports = dict(imports=["find_plugin.mmdet"], allow_failed_imports=False)

# RGB 0-255 with ImageNet statistics (detectron2 configs: PIXEL_MEAN / PIXEL_STD, FORMAT RGB);
# images are padded to a multiple of 32 like detectron2's size_divisibility.
data_preprocessor = dict(
    type="DetDataPreprocessor",
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_size_divisor=32,
    pad_mask=False,
    pad_seg=False,
)

# AdamW over the trainable parameters, no decay on norms, embeddings and learnt query rows
# (detectron2: SOLVER.WEIGHT_DECAY_NORM / WEIGHT_DECAY_EMBED, find_plugin/d2/solver.py), full-model
# gradient clipping (SOLVER.CLIP_GRADIENTS, CLIP_TYPE full_model). Mixed precision: --amp
# (tools/mmdet_train.py) or optim_wrapper.type='AmpOptimWrapper' (CUDA).
_no_decay = dict(decay_mult=0.0)
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=1e-4, weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        custom_keys=dict(
            query_feat=_no_decay,
            query_embed=_no_decay,
            level_embed=_no_decay,
            logit_scale=_no_decay,
        ),
    ),
    clip_grad=dict(max_norm=0.01, norm_type=2),
)

custom_hooks = [dict(type="FINDTrainingStateHook")]
default_hooks = dict(visualization=dict(type="DetVisualizationHook", draw=False))
log_processor = dict(type="LogProcessor", window_size=20, by_epoch=False)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")

# Distributed (--launcher pytorch): a batch runs only the tasks it holds (e.g. no prev_mask -> no
# spatial memories), so some parameters get no gradient in a step; buffers are not broadcast
# (the class bank is all-gathered inside the interface), as tools/train_net.py does.
model_wrapper_cfg = dict(
    type="MMDistributedDataParallel", find_unused_parameters=True, broadcast_buffers=False
)
