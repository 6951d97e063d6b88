"""Class-embedding bank: class names -> classifier rows in the semantic space (spec §2.1).

Each class prompt (``EVAL_TEMPLATE`` at evaluation, one of ``TRAIN_TEMPLATES`` in training; the
official list of ``utils/prompt_engineering.get_llm_prompt_templates``) is encoded by the frozen
language model, projected by ``lang_proj`` and run through the interface in task ``'class'`` on
all-zero image features; the class query's semantic output ``pred_retrievals_class`` is the row.
The last class is ``"background"`` (the no-object class).

Training: every image samples one class id (background included) and one template; its class query
runs in the same forward pass and, at every layer, overwrites that row of the bank (gradients
flow to the refreshed row, see ``FINDInterface.forward(class_bank=...)``); the refreshed bank is
stored detached (:meth:`ClassBank.store_`) for the next step.

Re-implements (facts from the papers and code, no code copied):
- FIND: Zou et al., "Interfacing Foundation Models' Embeddings", arXiv 2312.07532
  (github.com/UX-Decoder/FIND).
"""

from typing import List, Sequence

import torch
from torch import nn

from .text_pass import zero_feature_pass

EVAL_TEMPLATE = "Describe the concept of {}."
TRAIN_TEMPLATES = (
    "{}.",
    "Describe the concept of {}.",
    "An image of {}.",
    "Describe {}.",
    "Describe visually a {}.",
    "Describe an image of {}.",
    "Describe visually an image of {}.",
    "Describe specifically and visually an image of {}.",
    "How to determine visually an {}.",
    "Let's describe an image of {}.",
    "Let's explain an image of {}.",
    "I am seeing an image of {}.",
)
BACKGROUND = "background"


def clean_class_name(name: str) -> str:
    """COCO panoptic names without the '-other' / '-merged' / '-stuff' suffixes."""
    for suffix in ("-other", "-merged", "-stuff"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def class_prompts(class_names: Sequence[str], template: str = EVAL_TEMPLATE) -> List[str]:
    """Prompt per class, with "background" appended when missing (it must be last)."""
    names = [clean_class_name(n) for n in class_names]
    if not names or names[-1] != BACKGROUND:
        names = names + [BACKGROUND]
    return [template.format(n) for n in names]


def build_class_bank(
    interface: nn.Module,
    tokens: torch.Tensor,
    token_padding: torch.Tensor,
    *,
    batch_size: int = 16,
) -> torch.Tensor:
    """Run task 'class' on zero features. tokens [K, T, dim_proj] (projected), token_padding
    [K, T] (True = padded) -> bank [K, dim_proj]. Each class is independent of the others, so
    batching gives the same rows as the official one-class-at-a-time loop."""
    if tokens.dim() != 3 or token_padding.shape != tokens.shape[:2]:
        raise ValueError(
            f"tokens must be [K, T, C] and token_padding [K, T], got {tuple(tokens.shape)} and "
            f"{tuple(token_padding.shape)}"
        )
    inputs = {"tokens": tokens, "token_padding": token_padding}
    return zero_feature_pass(
        interface, "class", inputs, "pred_retrievals_class", batch_size=batch_size
    )


class ClassBank(nn.Module):
    """Holds the (detached) bank [K, dim_proj] as a buffer; the last row is background."""

    def __init__(self, *, num_classes: int, dim_proj: int):
        super().__init__()
        self.register_buffer("embeddings", torch.zeros(num_classes, dim_proj))

    def store_(self, bank: torch.Tensor) -> None:
        if bank.shape != self.embeddings.shape:
            raise ValueError(f"bank shape {tuple(bank.shape)} != {tuple(self.embeddings.shape)}")
        self.embeddings.copy_(bank.detach())

    @staticmethod
    def refreshed(bank: torch.Tensor, rows: torch.Tensor, class_indexes: torch.Tensor):
        """Copy of ``bank`` with rows ``class_indexes`` [B] replaced by ``rows`` [B, D] (grads
        flow to the replaced rows; with repeated ids the last image wins)."""
        out = bank.detach().clone()
        out[class_indexes.long()] = rows.to(out.dtype)
        return out
