"""``FINDTrainingStateHook`` in MMDetection's ``HOOKS``: resumable FIND training under mmengine.

mmengine's checkpoints hold the model's ``state_dict`` (the one FIND layout: ``backbone.*``,
``pixel_decoder.*``, ``interface.*``), the optimizer and the schedulers. A resumed FIND run also
needs :meth:`~find_plugin.task_model.FINDTaskModel.training_state` (class-bank rows refreshed in
training, the model-side generator, the torch RNG); this hook stores it under
``checkpoint["find_training_state"]`` and restores it on ``--resume``.
"""

from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

__all__ = ["FINDTrainingStateHook"]

KEY = "find_training_state"


def _model(runner):
    model = runner.model
    return model.module if is_model_wrapper(model) else model


@HOOKS.register_module()
class FINDTrainingStateHook(Hook):
    """Save / restore the FIND model's training state with mmengine's checkpoints."""

    priority = "NORMAL"

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        model = _model(runner)
        if hasattr(model, "training_state"):
            checkpoint[KEY] = model.training_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = _model(runner)
        if KEY in checkpoint and hasattr(model, "load_training_state"):
            model.load_training_state(checkpoint[KEY])
