"""The accuracy proxy: a short distillation training at the candidate's bit widths, then validation."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Mapping

from search._distill import as_xy, distill_train
from search._train import accuracy

if TYPE_CHECKING:
    import torch

__all__ = ["ProxyEvaluator", "SupernetProxy"]

logger = logging.getLogger(__name__)


class ProxyEvaluator:
    """Scores a model by its validation accuracy after a short knowledge-distillation training.

    The teacher's logits on ``train`` are computed once, here, and reused by every trial, so a trial pays
    only for the student. Each call trains a fake-quantised copy of the model at the given bits (see
    :func:`search.distill_train`) and returns its top-1 accuracy on ``val``, a fraction in [0, 1].
    Deterministic for a given ``seed`` (seeded torch, deterministic algorithms, ``threads`` threads).

    Attributes:
        teacher_logits: the cached logits of the teacher on the training inputs.
        last_seconds: wall time of the last call, in seconds.
        last_model: the model the last call trained (its weights give the trial's Deep Compression size).
    """

    def __init__(self, train: Any, val: Any, teacher: "torch.nn.Module", *, epochs: int = 4,
                 batch_size: int = 32, lr: float = 0.05, temperature: float = 4.0, alpha: float = 0.9,
                 seed: int = 0, threads: int | None = 1) -> None:
        import torch

        if epochs < 0:
            raise ValueError(f"epochs={epochs!r} must be >= 0")
        self.train = as_xy(train, "train")
        self.val = as_xy(val, "val")
        self.epochs, self.batch_size, self.lr = epochs, batch_size, lr
        self.temperature, self.alpha, self.seed, self.threads = temperature, alpha, seed, threads
        teacher.eval()
        with torch.no_grad():
            x = self.train[0]
            self.teacher_logits = torch.cat([teacher(x[i:i + 512]) for i in range(0, len(x), 512)]).detach()
        self.last_seconds = 0.0
        self.last_model: "torch.nn.Module | None" = None

    def fine_tune(self, model: "torch.nn.Module", module_bits: Mapping[str, int], *, epochs: int | None = None,
                  lr: float | None = None) -> "torch.nn.Module":
        """The fake-quantised model trained by distillation for ``epochs`` (default: the proxy's)."""
        return distill_train(
            model, module_bits, self.train, self.teacher_logits,
            epochs=self.epochs if epochs is None else epochs, batch_size=self.batch_size,
            lr=self.lr if lr is None else lr, temperature=self.temperature, alpha=self.alpha, seed=self.seed,
            threads=self.threads,
        )

    def __call__(self, model: "torch.nn.Module", module_bits: Mapping[str, int]) -> float:
        start = time.perf_counter()
        trained = self.fine_tune(model, module_bits)
        self.last_model = trained
        acc = accuracy(trained, self.val)
        self.last_seconds = time.perf_counter() - start
        logger.debug("proxy accuracy %.4f in %.2f s", acc, self.last_seconds)
        return acc


class SupernetProxy:
    """Scores a candidate by the weights it inherits from a trained supernet (``spaces.Supernet``).

    ``build(candidate)`` extracts the candidate's model from the supernet (its ordinary
    ``space.build`` model holding the inherited weights); calling the proxy on that model fake-quantises it
    at ``module_bits``, optionally trains it for ``steps`` distillation steps at those bits (one-cycle
    schedule up to ``lr``, on the first ``steps * batch_size`` training images), recomputes its BatchNorm
    statistics on ``calib_samples`` training images (the shared statistics belong to no sub-network) and
    returns its validation accuracy, a fraction in [0, 1]. Deterministic for a given ``seed``.

    Attributes:
        last_seconds: wall time of the last call, in seconds (the extraction is not included).
    """

    def __init__(self, supernet: Any, train: Any, val: Any, teacher: "torch.nn.Module", *, steps: int = 0,
                 calib_samples: int = 256, batch_size: int = 32, lr: float = 0.05, temperature: float = 4.0,
                 alpha: float = 0.9, seed: int = 0, threads: int | None = 1) -> None:
        import torch

        if steps < 0:
            raise ValueError(f"steps={steps!r} must be >= 0")
        if calib_samples < 2:
            raise ValueError(f"calib_samples={calib_samples!r} must be >= 2")
        self.supernet = supernet
        self.train = as_xy(train, "train")
        self.val = as_xy(val, "val")
        self.steps, self.calib_samples, self.batch_size, self.lr = steps, calib_samples, batch_size, lr
        self.temperature, self.alpha, self.seed, self.threads = temperature, alpha, seed, threads
        n = min(len(self.train[0]), steps * batch_size)
        self.teacher_logits = None
        if n:
            teacher.eval()
            with torch.no_grad():
                x = self.train[0][:n]
                self.teacher_logits = torch.cat([teacher(x[i:i + 512]) for i in range(0, n, 512)]).detach()
        self.last_seconds = 0.0
        self.last_model: "torch.nn.Module | None" = None

    def build(self, candidate: Any) -> "torch.nn.Module":
        """The candidate's model with the weights it inherits from the supernet."""
        return self.supernet.extract(candidate)

    def __call__(self, model: "torch.nn.Module", module_bits: Mapping[str, int]) -> float:
        from search._distill import deterministic, recalibrate_batchnorm
        from spaces.compress import prepare_qat

        start = time.perf_counter()
        x, y = self.train
        if self.steps:
            n = len(self.teacher_logits)
            student = distill_train(model, module_bits, (x[:n], y[:n]), self.teacher_logits, epochs=1,
                                    batch_size=self.batch_size, lr=self.lr, temperature=self.temperature,
                                    alpha=self.alpha, seed=self.seed, threads=self.threads)
        else:
            with deterministic(self.seed, self.threads):
                student = prepare_qat(model, module_bits) if any(b != 32 for b in module_bits.values()) else model
        with deterministic(self.seed, self.threads):
            recalibrate_batchnorm(student, x[:self.calib_samples], batch_size=128)
            acc = accuracy(student, self.val)
        self.last_model = student
        self.last_seconds = time.perf_counter() - start
        logger.debug("supernet proxy accuracy %.4f in %.2f s", acc, self.last_seconds)
        return acc
