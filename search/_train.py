"""Plain supervised training and evaluation on in-memory splits (the built-in teacher uses them)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["accuracy", "predict_logits", "top1_accuracy", "train_classifier"]

logger = logging.getLogger(__name__)


def predict_logits(model: "torch.nn.Module", x: "torch.Tensor", *, batch_size: int = 512) -> "torch.Tensor":
    """Logits of ``model`` (switched to eval mode) on ``x``, batch by batch, without gradients."""
    import torch

    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def top1_accuracy(logits: "torch.Tensor | np.ndarray", labels: "torch.Tensor | np.ndarray") -> float:
    """The share of rows whose largest logit is the label, a fraction in [0, 1] (torch or numpy arrays):
    the one definition of accuracy, for PyTorch models and ONNX files alike."""
    import numpy as np

    pred = np.asarray(logits.detach() if hasattr(logits, "detach") else logits).argmax(axis=1)
    truth = np.asarray(labels.detach() if hasattr(labels, "detach") else labels)
    return float(np.mean(pred == truth)) if len(truth) else 0.0


def accuracy(model: "torch.nn.Module", data: Any, *, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` (switched to eval mode) on ``data``: a split (``.x``, ``.y``) or a tuple
    ``(inputs, labels)``; a fraction in [0, 1]."""
    x, y = (data.x, data.y) if hasattr(data, "x") else data
    return top1_accuracy(predict_logits(model, x, batch_size=batch_size), y)


def train_classifier(model: "torch.nn.Module", train: Any, *, epochs: int, batch_size: int = 64,
                     lr: float = 0.05, seed: int = 0,
                     on_epoch: Callable[[int], None] | None = None) -> "torch.nn.Module":
    """Train with SGD (momentum 0.9, cosine schedule, light random-shift augmentation) and cross entropy.

    Deterministic for a given ``seed`` on a given machine. ``on_epoch(epoch)`` is called after each epoch.
    """
    import torch
    import torch.nn.functional as F

    if epochs < 1:
        raise ValueError(f"epochs={epochs!r} must be >= 1")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = epochs * max(1, -(-len(train) // batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(train), generator=gen)
        for i in range(0, len(train), batch_size):
            idx = perm[i:i + batch_size]
            x = _shift(train.x[idx], gen)
            loss = F.cross_entropy(model(x), train.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if on_epoch is not None:
            on_epoch(epoch)
    return model.eval()


def _shift(x: "torch.Tensor", gen: "torch.Generator", max_shift: int = 2) -> "torch.Tensor":
    """Random translation by up to ``max_shift`` pixels (zero fill), one shift per batch."""
    import torch
    import torch.nn.functional as F

    dx, dy = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=gen))
    if dx == 0 and dy == 0:
        return x
    p = max_shift
    padded = F.pad(x, (p, p, p, p))
    h, w = x.shape[-2:]
    return padded[..., p + dy:p + dy + h, p + dx:p + dx + w]
