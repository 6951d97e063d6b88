#!/usr/bin/env python
"""Train and evaluate FIND with detectron2's trainer (the structure of Mask2Former's train_net).

    python tools/train_net.py --config-file configs/find_focalt.yaml --num-gpus 8
    python tools/train_net.py --config-file configs/find_focalt.yaml --eval-only \\
        MODEL.WEIGHTS find_focalt_llama_x640
    python tools/train_net.py --config-file <cfg> --resume          # continue from last_checkpoint
    python tools/train_net.py --register my_datasets.py --config-file my.yaml   # your own data

Everything FIND-specific is registered by ``import find_plugin.d2``: the ``FIND`` meta-architecture,
the task registry, the FIND mappers (``INPUT.DATASET_MAPPER_NAME`` for training, each dataset's
evaluation mapper) and evaluators (dispatched on each dataset's ``find_eval_tasks`` /
``evaluator_type``). Progress and ETA come from detectron2's hooks; checkpoints are written
atomically by :class:`~find_plugin.d2.FINDCheckpointer` (which also reads official FIND files,
URLs and model-zoo names). Multi-GPU / multi-machine runs go through detectron2's ``launch``.
"""

import logging
import os
import runpy
import sys
import weakref

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)

from detectron2.config import get_cfg  # noqa: E402
from detectron2.data import (  # noqa: E402
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.engine import (  # noqa: E402
    AMPTrainer,
    DefaultTrainer,
    SimpleTrainer,
    TrainerBase,
    create_ddp_model,
    default_argument_parser,
    default_setup,
    launch,
)
from detectron2.evaluation import verify_results  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

import find_plugin.d2  # noqa: E402,F401  (registration)
from find_plugin.d2 import FINDCheckpointer, add_find_config  # noqa: E402
from find_plugin.d2.evaluation import build_find_evaluator  # noqa: E402
from find_plugin.d2.mappers import build_find_mapper  # noqa: E402
from find_plugin.d2.resumable import PositionedDataset, ResumableTrainingSampler  # noqa: E402
from find_plugin.d2.solver import build_find_optimizer  # noqa: E402

logger = logging.getLogger("find_plugin.train_net")


class Trainer(DefaultTrainer):
    """detectron2's trainer with FIND's mappers, evaluators, optimizer and checkpointer."""

    def __init__(self, cfg):
        # DefaultTrainer.__init__'s steps, with FIND's DDP options and checkpointer.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        # A batch runs only the tasks it holds (e.g. no prev_mask -> no spatial memories), so
        # some parameters get no gradient in a step; CPU processes (gloo) take no device_ids.
        ddp = {"find_unused_parameters": True}
        if cfg.MODEL.DEVICE == "cpu":
            ddp["device_ids"] = None
        model = create_ddp_model(model, broadcast_buffers=False, **ddp)
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(
            model, data_loader, optimizer
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        # FIND's checkpointer (atomic writes; official / zoo / URL weights) and the training
        # state (class bank, generators, RNG), so a resumed run continues the same stream.
        self.checkpointer = FINDCheckpointer.from_config(
            cfg, model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        self.checkpointer.add_checkpointable("find_state", TrainingState(model))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        if self.start_iter > 0:
            # continue the training stream where the checkpointed run stopped
            per_rank = self.cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
            self._trainer.data_loader = self.build_train_loader(
                self.cfg, start=self.start_iter * per_rank
            )
            self._trainer._data_loader_iter_obj = None

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_find_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_train_loader(cls, cfg, start: int = 0):
        """detectron2's training loader over a resumable stream: the same seeded shuffle as an
        uninterrupted run from this rank's ``start``-th item, each item carrying its position
        (the FIND mappers seed their draws with it)."""
        dicts = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
        )
        sampler = ResumableTrainingSampler(len(dicts), seed=max(cfg.SEED, 0), start=start)
        return build_detection_train_loader(
            dataset=PositionedDataset(dicts, build_find_mapper(cfg, True)),
            mapper=None,
            sampler=sampler,
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
            aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        mapper = build_find_mapper(cfg, False, dataset_name=dataset_name)
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_find_optimizer(cfg, model)


class TrainingState:
    """Checkpointable view of :meth:`find_plugin.d2.FIND.training_state` (DDP-unwrapped)."""

    def __init__(self, model):
        self.model = model.module if hasattr(model, "module") else model

    def state_dict(self):
        return self.model.training_state()

    def load_state_dict(self, state):
        self.model.load_training_state(state)


def setup(args):
    cfg = get_cfg()
    add_find_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.SOLVER.AMP.ENABLED and not (torch.cuda.is_available() and cfg.MODEL.DEVICE != "cpu"):
        cfg.SOLVER.AMP.ENABLED = False  # AMP is a CUDA path; a CPU run trains in float32
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=0, name="find_plugin")
    return cfg


def register_datasets(path: str) -> None:
    """Run the user's registration file (``register_find_dataset(...)`` calls, see
    docs/custom_dataset.md) in this process, before the config names its datasets."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--register: file {path!r} does not exist")
    runpy.run_path(path, run_name="find_register")


def main(args):
    if getattr(args, "register", ""):
        register_datasets(args.register)  # in every launched process
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        FINDCheckpointer.from_config(cfg, model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = Trainer.test(cfg, model)
        if cfg.TEST.EXPECTED_RESULTS:
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def get_parser():
    parser = default_argument_parser()
    parser.add_argument(
        "--register",
        default="",
        metavar="FILE",
        help="python file that registers your datasets (register_find_dataset) before training",
    )
    return parser


if __name__ == "__main__":
    args = get_parser().parse_args()
    logger.info("Command line arguments: %s", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
