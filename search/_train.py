"""Plain supervised training and evaluation on in-memory splits (the built-in teacher uses them)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch

    from search._data import Split

__all__ = ["accuracy", "predict_logits", "train_classifier"]

logger = logging.getLogger(__name__)


def predict_logits(model: "torch.nn.Module", x: "torch.Tensor", *, batch_size: int = 512) -> "torch.Tensor":
    """Logits of ``model`` (switched to eval mode) on ``x``, batch by batch, without gradients."""
    import torch

    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def accuracy(model: "torch.nn.Module", split: "Split", *, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on ``split``, a fraction in [0, 1]."""
    logits = predict_logits(model, split.x, batch_size=batch_size)
    return float((logits.argmax(dim=1) == split.y).float().mean())


def train_classifier(model: "torch.nn.Module", train: "Split", *, epochs: int, batch_size: int = 64,
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
