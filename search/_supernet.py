"""Training a student space's weight-sharing supernet by distillation, cached and resumable.

One supernet per (space, space options, data set, teacher, epochs, seed): :func:`load_supernet` reads it
from ``$KARUMI_CACHE/supernets/`` or trains it there. Training is knowledge distillation from the teacher
(:func:`search.kd_loss`, the teacher's logits computed once) with the *sandwich rule* (Yu et al., BigNAS /
US-Nets; OFA trains the same sub-networks progressively): every step accumulates the gradients of the
largest sub-network, the smallest and ``random`` random ones (architecture and per-layer prune ratios
drawn as the search draws them) on the same batch, then takes one SGD step on the shared weights. Channels
keep their order (slimmable networks: every sub-network trains the leading ones); sorting them by importance
after training (``spaces.Supernet.sort_channels``) measured worse here: a MobileNet block of expansion 1 runs
its depthwise convolution on the block's input channels, which the sort of the hidden channels scrambles,
and every narrower sub-network loses the channels it was trained with.

The state after every finished epoch (shared tensors, the optimiser's momentum, by tensor name) is saved
with ``torch.save`` as a flat dict of tensors (loaded with ``weights_only=True``) beside a JSON file of
metadata; an interrupted training continues from its last finished epoch, with the same random draws as an
uninterrupted one (the draws of epoch ``e`` are seeded by ``(seed, e)``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import time
from typing import TYPE_CHECKING, Any, Callable

from search._cache import cache_dir
from search._distill import deterministic, kd_loss
from spaces import Supernet

if TYPE_CHECKING:
    import torch

    from search._data import DataSet
    from spaces import SearchSpace

__all__ = ["SUPERNET_VERSION", "SupernetResult", "load_supernet", "supernet_key", "teacher_fingerprint",
           "train_supernet"]

logger = logging.getLogger(__name__)

#: Version of the supernet recipe (part of its cache key).
SUPERNET_VERSION = 1


def teacher_fingerprint(teacher: "torch.nn.Module") -> str:
    """A short hash of the teacher's tensors (names, shapes, values): what the supernet was distilled from."""
    h = hashlib.sha256()
    for name, value in sorted(teacher.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(value.shape)).encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def supernet_key(space: "SearchSpace", data: "DataSet", teacher: "torch.nn.Module", *, epochs: int,
                 seed: int) -> str:
    """The cache key: space and its options, data set, teacher fingerprint, epochs, seed, recipe version."""
    options = json.dumps(space.options, sort_keys=True, default=repr)
    digest = hashlib.sha256(f"{space.name}|{options}".encode()).hexdigest()[:10]
    return (f"{space.name}-{digest}-{data.key}-t{teacher_fingerprint(teacher)}-e{epochs}-s{seed}"
            f"-v{SUPERNET_VERSION}")


class SupernetResult:
    """A trained supernet and how it was obtained.

    Attributes:
        supernet: the shared weights (``spaces.Supernet``).
        path: the cached state file.
        trained_epochs: epochs trained by this call (0: read from the cache).
        resumed_from: the finished epochs found in the cache when training started (0: from scratch).
        seconds: wall time of this call.
        train_seconds: training time of all its epochs, across interruptions, seconds.
    """

    def __init__(self, supernet: Supernet, path: pathlib.Path, trained_epochs: int, resumed_from: int,
                 seconds: float, train_seconds: float) -> None:
        self.supernet, self.path = supernet, path
        self.trained_epochs, self.resumed_from = trained_epochs, resumed_from
        self.seconds, self.train_seconds = seconds, train_seconds


def train_supernet(supernet: Supernet, train: Any, teacher_logits: "torch.Tensor", *, epochs: int,
                   start_epoch: int = 0, batch_size: int = 64, lr: float = 0.05, temperature: float = 4.0,
                   alpha: float = 0.9, random: int = 2, seed: int = 0, threads: int | None = 1,
                   momentum: dict[str, "torch.Tensor"] | None = None,
                   on_epoch: Callable[[int, dict[str, "torch.Tensor"]], None] | None = None) -> dict[str, "torch.Tensor"]:
    """Train ``supernet`` in place for epochs ``start_epoch`` .. ``epochs - 1`` (sandwich rule, distillation).

    SGD with Nesterov momentum 0.9, weight decay 5e-5 and a cosine learning rate over all ``epochs``
    (indexed by step, so a resumed training continues the same schedule); gradients clipped to norm 5.
    ``momentum`` (tensor name -> buffer) continues a resumed optimiser. ``on_epoch(epoch, momentum)`` is
    called after each epoch (the cache saves there). Returns the momentum buffers.
    """
    import math

    import numpy as np
    import torch

    x, y = (train.x, train.y) if hasattr(train, "x") else train
    if epochs < 0 or not 0 <= start_epoch <= epochs:
        raise ValueError(f"epochs={epochs!r}, start_epoch={start_epoch!r}: need 0 <= start_epoch <= epochs")
    named = supernet.named_parameters()
    params = [p for _, p in named]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-5)
    if momentum:
        for name, p in named:
            if name in momentum:
                opt.state[p]["momentum_buffer"] = momentum[name].clone()
    steps_per_epoch = max(1, -(-len(x) // batch_size))
    total = max(1, epochs * steps_per_epoch)
    largest = supernet.largest_candidates[0]
    with deterministic(seed, threads):
        for epoch in range(start_epoch, epochs):
            rng = np.random.default_rng([seed, epoch])
            gen = torch.Generator().manual_seed(seed * 100003 + epoch)
            perm = torch.randperm(len(x), generator=gen)
            for i, start in enumerate(range(0, len(x), batch_size)):
                step = epoch * steps_per_epoch + i
                for group in opt.param_groups:
                    group["lr"] = 0.5 * lr * (1.0 + math.cos(math.pi * step / total))
                idx = perm[start:start + batch_size]
                if len(idx) < 2:  # BatchNorm needs two samples
                    continue
                xb, yb, tb = x[idx], y[idx], teacher_logits[idx]
                opt.zero_grad(set_to_none=True)
                subnets = [largest, supernet.smallest_candidate, *(supernet.sample(rng) for _ in range(random))]
                for cand in subnets:
                    loss = kd_loss(supernet.forward(cand, xb), tb, yb, temperature=temperature, alpha=alpha)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"supernet training diverged at epoch {epoch} (loss {float(loss)})")
                    loss.backward()
                torch.nn.utils.clip_grad_norm_(params, max_norm=5.0)
                opt.step()
            buffers = {name: opt.state[p]["momentum_buffer"].detach().clone()
                       for name, p in named if "momentum_buffer" in opt.state.get(p, {})}
            if on_epoch is not None:
                on_epoch(epoch, buffers)
    return {name: opt.state[p]["momentum_buffer"] for name, p in named if "momentum_buffer" in opt.state.get(p, {})}


def load_supernet(space: "SearchSpace", data: "DataSet", teacher: "torch.nn.Module", *, epochs: int,
                  seed: int = 0, cache: pathlib.Path | None = None, batch_size: int = 64, threads: int | None = 1,
                  max_epochs_now: int | None = None,
                  on_epoch: Callable[[int, int], None] | None = None) -> SupernetResult:
    """The supernet of ``space`` distilled from ``teacher`` on ``data``'s training split for ``epochs``.

    Read from the cache when finished; otherwise trained (continuing from the last finished epoch of an
    interrupted training), saving after every epoch. ``max_epochs_now`` stops after that many epochs of
    this call (the state stays resumable; used to test resuming). ``on_epoch(epoch, epochs)`` after each
    epoch (a progress bar).

    Raises:
        ValueError: the space has no supernet, or ``epochs`` < 1.
    """
    import torch

    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs={epochs!r} must be a positive integer")
    start = time.perf_counter()
    supernet = Supernet(space, seed=seed)
    key = supernet_key(space, data, teacher, epochs=epochs, seed=seed)
    folder = (cache or cache_dir()) / "supernets"
    path, meta_path = folder / f"{key}.pt", folder / f"{key}.json"
    done, train_seconds, momentum = 0, 0.0, None
    if path.is_file() and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            state = torch.load(path, map_location="cpu", weights_only=True)
            supernet.load_state_dict(state["tensors"])
            momentum = state.get("momentum") or None
            done, train_seconds = int(meta["epochs_done"]), float(meta.get("train_seconds", 0.0))
        except (RuntimeError, OSError, ValueError, KeyError, EOFError, TypeError) as exc:
            logger.warning("cached supernet %s is unreadable (%s); training it again", path, exc)
            supernet, done, train_seconds, momentum = Supernet(space, seed=seed), 0, 0.0, None
    if done >= epochs:
        logger.info("supernet of %s read from %s", space.name, path)
        return SupernetResult(supernet, path, 0, done, time.perf_counter() - start, train_seconds)
    stop = epochs if max_epochs_now is None else min(epochs, done + max(0, max_epochs_now))
    if stop <= done:
        return SupernetResult(supernet, path, 0, done, time.perf_counter() - start, train_seconds)
    logger.info("training the %s supernet on %s for %d epochs (from epoch %d)", space.name, data.name, epochs, done)
    x = data.train.x
    teacher.eval()
    with torch.no_grad():
        logits = torch.cat([teacher(x[i:i + 512]) for i in range(0, len(x), 512)]).detach()
    folder.mkdir(parents=True, exist_ok=True)
    t_epoch = [time.perf_counter()]
    seconds = [train_seconds]

    def save(epoch: int, buffers: dict[str, "torch.Tensor"]) -> None:
        now = time.perf_counter()
        seconds[0] += now - t_epoch[0]
        t_epoch[0] = now
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"tensors": supernet.state_dict(), "momentum": buffers}, tmp)
        os.replace(tmp, path)
        meta = {"format_version": 1, "space": space.name, "options": space.options, "data": data.key,
                "teacher": teacher_fingerprint(teacher), "epochs": epochs, "epochs_done": epoch + 1, "seed": seed,
                "version": SUPERNET_VERSION, "train_seconds": round(seconds[0], 3)}
        tmp_meta = meta_path.with_suffix(f".tmp{os.getpid()}")
        tmp_meta.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp_meta, meta_path)
        logger.info("supernet epoch %d/%d saved (%.1f s)", epoch + 1, epochs, seconds[0])
        if on_epoch is not None:
            on_epoch(epoch, epochs)

    # the epochs of this call; the schedule and the draws are those of the whole training
    _train_range(supernet, data.train, logits, epochs=epochs, start=done, stop=stop, batch_size=batch_size,
                 seed=seed, threads=threads, momentum=momentum, save=save)
    return SupernetResult(supernet, path, stop - done, done, time.perf_counter() - start, seconds[0])


def _train_range(supernet: Supernet, train: Any, logits: "torch.Tensor", *, epochs: int, start: int, stop: int,
                 batch_size: int, seed: int, threads: int | None, momentum: Any,
                 save: Callable[[int, dict[str, "torch.Tensor"]], None]) -> None:
    class _Stop(Exception):
        pass

    def on_epoch(epoch: int, buffers: dict[str, "torch.Tensor"]) -> None:
        save(epoch, buffers)
        if epoch + 1 >= stop and stop < epochs:
            raise _Stop

    try:
        train_supernet(supernet, train, logits, epochs=epochs, start_epoch=start, batch_size=batch_size, seed=seed,
                       threads=threads, momentum=momentum, on_epoch=on_epoch)
    except _Stop:
        pass
