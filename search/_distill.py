"""Knowledge distillation (Hinton et al., 2015): the loss, a feature hint loss and the training loop."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from spaces.compress import act_quantizers, calibrate, prepare_qat, quantized_layers

if TYPE_CHECKING:
    import torch

__all__ = ["as_xy", "distill_train", "hint_loss", "kd_loss", "recalibrate_batchnorm"]

logger = logging.getLogger(__name__)


def kd_loss(student_logits: "torch.Tensor", teacher_logits: "torch.Tensor", targets: "torch.Tensor", *,
            temperature: float = 4.0, alpha: float = 0.9) -> "torch.Tensor":
    """``T² · α · KL(teacher ‖ student at temperature T) + (1 − α) · cross_entropy(student, targets)``.

    The KL term compares the softmax of ``teacher_logits / T`` with the softmax of ``student_logits / T``
    (mean over the batch); multiplying by ``T²`` keeps its gradient scale independent of ``T``.
    """
    import torch.nn.functional as F

    if temperature <= 0:
        raise ValueError(f"temperature={temperature!r} must be > 0")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha!r} must be in [0, 1]")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student_logits shape {tuple(student_logits.shape)} differs from teacher_logits shape "
            f"{tuple(teacher_logits.shape)}"
        )
    t = float(temperature)
    kl = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                  reduction="batchmean", log_target=True)
    ce = F.cross_entropy(student_logits, targets)
    return t * t * alpha * kl + (1.0 - alpha) * ce


def hint_loss(student_features: "torch.Tensor", teacher_features: "torch.Tensor", *,
              regressor: "torch.nn.Module | None" = None) -> "torch.Tensor":
    """FitNets feature hint: mean squared error between (regressed) student and teacher feature maps.

    ``regressor`` (e.g. a 1×1 convolution) maps the student's channels onto the teacher's when they differ.
    """
    import torch.nn.functional as F

    s = regressor(student_features) if regressor is not None else student_features
    if s.shape != teacher_features.shape:
        raise ValueError(
            f"student features shape {tuple(s.shape)} differs from teacher features shape "
            f"{tuple(teacher_features.shape)}; pass a regressor that maps one onto the other"
        )
    return F.mse_loss(s, teacher_features.detach())


def as_xy(data: Any, name: str) -> tuple["torch.Tensor", "torch.Tensor"]:
    """``(x, y)`` from a tuple or from an object with ``.x`` and ``.y`` (such as ``search`` splits)."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    if hasattr(data, "x") and hasattr(data, "y"):
        return data.x, data.y
    raise ValueError(f"{name} must be a tuple (inputs, targets) of tensors, got {type(data).__name__}")


@contextlib.contextmanager
def deterministic(seed: int, threads: int | None) -> Iterator[None]:
    """Seeded, deterministic torch (restores the thread count and the deterministic flag afterwards)."""
    import torch

    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_det)
        torch.set_num_threads(old_threads)


def distill_train(model: "torch.nn.Module", module_bits: Mapping[str, int], train: Any,
                  teacher_logits: "torch.Tensor", *, epochs: int, batch_size: int = 64, lr: float = 0.05,
                  temperature: float = 4.0, alpha: float = 0.9, seed: int = 0, threads: int | None = 1,
                  weight_decay: float = 5e-4) -> "torch.nn.Module":
    """Train a fake-quantised copy of ``model`` at ``module_bits`` by distillation; returns it in eval mode.

    ``train`` is ``(inputs, targets)``; ``teacher_logits`` are the teacher's logits on those inputs, computed
    once by the caller and reused (the teacher never runs here). SGD with Nesterov momentum and a one-cycle
    schedule, gradients clipped to norm 5; the loss is :func:`kd_loss`. A diverging run (non-finite loss)
    stops early and returns the model as it was before the failing step. After training, BatchNorm
    running statistics are recomputed on the training inputs (:func:`recalibrate_batchnorm`). Deterministic for a given ``seed`` on a given machine (single
    thread by default). A model already prepared by ``spaces.compress.prepare_qat`` is trained as it is (a copy).
    The returned model is a ``spaces.compress.prepare_qat`` model: pass it with the same ``module_bits`` to
    ``spaces.compress.export_onnx_quantized``.
    """
    import copy

    import torch

    x, y = as_xy(train, "train")
    if epochs < 0:
        raise ValueError(f"epochs={epochs!r} must be >= 0")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be >= 1")
    if len(teacher_logits) != len(x):
        raise ValueError(f"teacher_logits has {len(teacher_logits)} rows for {len(x)} training inputs")
    with deterministic(seed, threads):
        if act_quantizers(model) or quantized_layers(model):
            student = copy.deepcopy(model)
        else:
            student = prepare_qat(model, module_bits)
        if epochs == 0:
            return _settle(student, x, batch_size)
        gen = torch.Generator().manual_seed(seed)
        params = [p for p in student.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
        steps_per_epoch = -(-len(x) // batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                    pct_start=0.15)
        student.train()
        for _ in range(epochs):
            perm = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), batch_size):
                idx = perm[i:i + batch_size]
                loss = kd_loss(student(x[idx]), teacher_logits[idx], y[idx], temperature=temperature, alpha=alpha)
                if not torch.isfinite(loss):
                    logger.warning("distillation diverged (loss %s); training stopped early", float(loss))
                    return student.eval()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, max_norm=5.0)
                opt.step()
                sched.step()
        recalibrate_batchnorm(student, x, batch_size=max(batch_size, 128))
    return student.eval()


def recalibrate_batchnorm(model: "torch.nn.Module", x: "torch.Tensor", *, batch_size: int = 128) -> None:
    """Recompute every BatchNorm's running statistics as the plain average over ``x`` (no gradients).

    After a short training the running averages still remember the initial weights; evaluating with them
    ranks briefly-trained students mostly by how fast their statistics converged. One forward pass over
    the training inputs fixes that (activation quantiser ranges follow too, as in training).
    """
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


def _settle(student: "torch.nn.Module", x: "torch.Tensor", batch_size: int) -> "torch.nn.Module":
    """No training: observe activation ranges on the training inputs (post-training quantisation)."""
    if act_quantizers(student) and not all(bool(q.initialised) for q in act_quantizers(student)):
        calibrate(student, [x[i:i + batch_size] for i in range(0, min(len(x), 8 * batch_size), batch_size)])
    return student.eval()
