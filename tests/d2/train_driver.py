"""Subprocess driver of the trainer tests: ``tools/train_net.py``'s Trainer on a tiny dataset,
recording every iteration's total loss, optionally killed (SIGKILL) after an iteration.

    python train_driver.py <info.json> <record.jsonl> --config-file <cfg> [--num-gpus N] [...]

``info.json`` holds ``{"paths": ..., "categories": ...}`` of ``tiny_dataset.write_tiny_coco``; the
dataset is registered as ``find_test_driver_train`` in every process (spawned ranks included).
``FIND_TEST_KILL_AT=<iteration>`` kills the process after that iteration.
"""

import importlib.util
import json
import os
import signal
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from detectron2.engine import HookBase, default_argument_parser, launch  # noqa: E402
from detectron2.utils import comm  # noqa: E402

from find_plugin.d2.datasets import panoptic_metadata, register_find_coco_panoptic  # noqa: E402


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_net = _load("find_train_net_driver", os.path.join(REPO, "tools", "train_net.py"))
INFO = json.load(open(sys.argv[1]))
RECORD = sys.argv[2]
register_find_coco_panoptic(
    "find_test_driver_train", panoptic_metadata(INFO["categories"]), **INFO["paths"]
)
KILL_AT = int(os.environ.get("FIND_TEST_KILL_AT", "-1"))


class Record(HookBase):
    def after_step(self):
        it = self.trainer.iter
        if comm.is_main_process():
            storage = self.trainer.storage
            row = {"iter": it, "total_loss": storage.history("total_loss").latest()}
            for name, (value, _) in storage.latest().items():
                if name.startswith("loss_") and not name[-1].isdigit():  # final-layer terms
                    row[name] = value
            with open(RECORD, "a") as f:
                f.write(json.dumps(row) + "\n")
        if it == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)


class Trainer(train_net.Trainer):
    def build_hooks(self):
        return super().build_hooks() + [Record()]


def run(args):
    cfg = train_net.setup(args)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args(sys.argv[3:])
    launch(run, args.num_gpus, dist_url="auto", args=(args,))
