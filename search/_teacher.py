"""The teacher: the built-in CNN (trained on first use, cached) or a model the user brings.

``builtin``: ``spaces.builtin_teacher``, a plain VGG-style CNN (conv-BN-ReLU blocks, max pooling, global
pooling, linear head), trained on the data set's training split the first time it is asked for, then
cached under ``$KARUMI_CACHE/teachers/`` (``~/.cache/karumi`` by default) as a state dict loaded with
``weights_only=True``. Otherwise a path: a TorchScript file, a ``torch.export`` program (``.pt2``), or
``torchvision:NAME=STATE_DICT`` (a torchvision architecture with the user's weights).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import time
from typing import TYPE_CHECKING, Callable

from search._cache import cache_dir
from search._errors import InputError
from search._train import accuracy, train_classifier
from spaces import builtin_teacher

if TYPE_CHECKING:
    import torch

    from search._data import DataSet

__all__ = ["BUILTIN_EPOCHS", "Teacher", "check_teacher_spec", "load_teacher"]

logger = logging.getLogger(__name__)

#: Version of the built-in teacher's architecture and recipe (part of its cache key); 2: its module names
#: (``conv1`` ... ``classifier``) are those of ``spaces.builtin_teacher``.
BUILTIN_VERSION = 2
#: Epochs the built-in teacher trains for on first use.
BUILTIN_EPOCHS = 12


@dataclasses.dataclass
class Teacher:
    """A trained teacher network and what is known about it.

    Attributes:
        model: the network, in eval mode (float32, batch-first NCHW input).
        source: ``"builtin"`` or the path given.
        val_accuracy: accuracy on the validation split, a fraction.
        test_accuracy: accuracy on the test split, a fraction.
        trained_now: True when the built-in teacher was trained by this call (not read from the cache).
        seconds: time spent training it now, or loading it.
    """

    model: "torch.nn.Module"
    source: str
    val_accuracy: float
    test_accuracy: float
    trained_now: bool = False
    seconds: float = 0.0


def check_teacher_spec(spec: str) -> None:
    """Raise :class:`InputError` when ``spec`` names a file that does not exist."""
    if spec == "builtin":
        return
    if spec.startswith("torchvision:"):
        rest = spec.split(":", 1)[1]
        if "=" not in rest or not rest.split("=", 1)[0]:
            raise InputError(f"--teacher {spec!r} must look like torchvision:NAME=STATE_DICT_PATH")
        path = pathlib.Path(rest.split("=", 1)[1]).expanduser()
    else:
        path = pathlib.Path(spec).expanduser()
    if not path.is_file():
        raise InputError(f"--teacher {spec}: the file {path} does not exist (allowed: builtin, a TorchScript or "
                         f".pt2 file, torchvision:NAME=STATE_DICT)")


def load_teacher(spec: str, data: "DataSet", *, seed: int = 0, epochs: int = BUILTIN_EPOCHS,
                 cache: pathlib.Path | None = None,
                 on_epoch: Callable[[int, int], None] | None = None) -> Teacher:
    """The teacher named by ``spec`` for ``data``, with its validation and test accuracy.

    Args:
        spec: ``"builtin"`` or a path (see the module docstring).
        data: the data set (the built-in teacher is trained on its training split).
        seed: seed of the built-in teacher's training (part of the cache key).
        epochs: epochs of the built-in teacher's training (part of the cache key).
        cache: the cache folder (default :func:`search._cache.cache_dir`).
        on_epoch: ``on_epoch(epoch, epochs)`` after each training epoch of the built-in teacher.

    Raises:
        InputError: the file is missing or cannot be loaded as a model that maps the data's images to
            ``num_classes`` logits.
    """
    check_teacher_spec(spec)
    start = time.perf_counter()
    trained_now = False
    if spec == "builtin":
        model, trained_now = _builtin(data, seed=seed, epochs=epochs, cache=cache or cache_dir(), on_epoch=on_epoch)
    else:
        model = _load_external(spec, data)
    _check_outputs(model, spec, data)
    return Teacher(model=model, source=spec, val_accuracy=accuracy(model, data.val),
                   test_accuracy=accuracy(model, data.test), trained_now=trained_now,
                   seconds=time.perf_counter() - start)


def _builtin(data: "DataSet", *, seed: int, epochs: int, cache: pathlib.Path,
             on_epoch: Callable[[int, int], None] | None) -> tuple["torch.nn.Module", bool]:
    import torch

    c, h, w = data.input_shape
    key = f"builtin-v{BUILTIN_VERSION}-{data.key}-{c}x{h}x{w}-c{data.num_classes}-e{epochs}-s{seed}"
    folder = cache / "teachers"
    path = folder / f"{key}.pt"
    model = builtin_teacher(in_channels=c, num_classes=data.num_classes)
    if path.is_file():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            logger.info("built-in teacher read from %s", path)
            return model.eval(), False
        except (RuntimeError, OSError, ValueError, EOFError) as exc:  # a truncated cache file: train again
            logger.warning("cached teacher %s is unreadable (%s); training it again", path, exc)
    logger.info("training the built-in teacher on %s for %d epochs", data.name, epochs)
    train_classifier(model, data.train, epochs=epochs, seed=seed,
                     on_epoch=None if on_epoch is None else (lambda e: on_epoch(e, epochs)))
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps({"data": data.key, "epochs": epochs, "seed": seed}) + "\n")
    return model.eval(), True


def _load_external(spec: str, data: "DataSet") -> "torch.nn.Module":
    import torch

    try:
        if spec.startswith("torchvision:"):
            import torchvision

            name, sd_path = spec.split(":", 1)[1].split("=", 1)
            try:
                model = torchvision.models.get_model(name, weights=None, num_classes=data.num_classes)
            except ValueError as exc:
                raise InputError(f"--teacher {spec}: {exc}") from None
            state = torch.load(pathlib.Path(sd_path).expanduser(), map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
                state = state["state_dict"]
            model.load_state_dict(state)
            return model.eval()
        path = pathlib.Path(spec).expanduser()
        if path.suffix == ".pt2":
            return torch.export.load(str(path)).module()
        return torch.jit.load(str(path), map_location="cpu").eval()
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001  (any failure to load is the user's file: say so in one line)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"--teacher {spec} cannot be loaded: {reason}") from None


def _check_outputs(model: "torch.nn.Module", spec: str, data: "DataSet") -> None:
    import torch

    c, h, w = data.input_shape
    try:
        with torch.no_grad():
            if hasattr(model, "eval"):
                model.eval()
            out = model(data.val.x[:2])
    except Exception as exc:  # noqa: BLE001
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"--teacher {spec} does not run on {c}x{h}x{w} images of --data {data.name}: {reason}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, data.num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(f"--teacher {spec} outputs {shape} for a batch of 2, expected (2, {data.num_classes}) logits "
                         f"for the {data.num_classes} classes of --data {data.name}")
