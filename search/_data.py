"""Data sets for the search, held in memory as normalised float tensors with fixed splits.

``digits`` (scikit-learn's 8x8 handwritten digits, shipped with scikit-learn, no download) is the
default. ``cifar10``, ``cifar100``, ``mnist`` and ``fashion-mnist`` come through torchvision from
``data_dir`` (downloaded there only when asked). ``imagefolder:PATH`` reads a folder of class
sub-folders (or ``train/``, ``val/``, ``test/`` folders of class sub-folders).

Every image is brought to ``input_size`` pixels square: by default :data:`IMAGE_SIZE` (MNIST-style 28x28
images are zero-padded, image folders resized), the CIFAR-sized input the built-in spaces are designed
for; the 8x8 digits are upsampled to :data:`DIGITS_SIZE` only by default, which keeps the default quick
search cheap (a 16x16 input costs a quarter of a 32x32 one in every layer). Pixel values are first
scaled to [0, 1], then standardised per channel with the training split's mean and standard deviation;
both are recorded in the :class:`DataSet` (the deployable model takes the [0, 1] image and does the
standardisation inside its graph). Splits are deterministic for a given seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import pathlib
from typing import TYPE_CHECKING

from search._cache import cache_dir
from search._errors import InputError
from search._synthetic import CLASSES as SHAPES_CLASSES
from search._synthetic import SIZE as SHAPES_SIZE
from search._synthetic import SPLITS as SHAPES_SPLITS
from search._synthetic import make_shapes

if TYPE_CHECKING:
    import torch

__all__ = ["DATASETS", "DIGITS_SIZE", "IMAGE_SIZE", "DataSet", "Split", "check_data_spec", "default_input_size",
           "load_data"]

logger = logging.getLogger(__name__)

#: Names accepted by ``--data`` (plus ``imagefolder:PATH``).
DATASETS = ("digits", "shapes", "cifar10", "cifar100", "mnist", "fashion-mnist")
#: Side of the square images every data set but digits is brought to.
IMAGE_SIZE = 32
#: Side of the square images the 8x8 digits are upsampled to.
DIGITS_SIZE = 16
#: Share of the training data held out for validation when a data set has no validation split.
VAL_FRACTION = 0.1
#: Upper bound on the validation split taken out of a large training set.
VAL_MAX = 5000
#: The smallest input side the spaces accept.
MIN_INPUT_SIZE = 8


@dataclasses.dataclass(frozen=True)
class Split:
    """Images ``x`` (N, C, H, W) float32, normalised, and labels ``y`` (N,) int64."""

    x: "torch.Tensor"
    y: "torch.Tensor"

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, n: int) -> "Split":
        """The first ``n`` samples (splits are already shuffled, so this is a random subset)."""
        return Split(self.x[:n], self.y[:n])


@dataclasses.dataclass(frozen=True)
class DataSet:
    """A data set with its train, validation and test splits.

    Attributes:
        name: the ``--data`` value it was loaded from.
        key: a short string identifying the data, its size and its splits (cache keys of teachers).
        num_classes: number of classes.
        input_shape: (C, H, W) of one image.
        mean, std: per channel, the standardisation applied to images scaled to [0, 1] (training split).
        classes: the class names, in label order.
    """

    name: str
    key: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    classes: tuple[str, ...] = ()

    def describe(self) -> str:
        c, h, w = self.input_shape
        return (f"{self.name}: {len(self.train)} train / {len(self.val)} val / {len(self.test)} test images, "
                f"{c}x{h}x{w}, {self.num_classes} classes")


def check_data_spec(spec: str) -> None:
    """Raise :class:`InputError` if ``spec`` is not a known data set or an existing image folder."""
    if spec.startswith("imagefolder:"):
        path = pathlib.Path(spec.split(":", 1)[1]).expanduser()
        if not path.is_dir():
            raise InputError(f"--data {spec}: the folder {path} does not exist")
        return
    if spec not in DATASETS:
        raise InputError(f"--data {spec!r} is not a known data set; allowed: {', '.join(DATASETS)}, imagefolder:PATH")


def default_input_size(spec: str) -> int:
    """The side images of ``spec`` are brought to unless asked otherwise: 16 for digits, else 32."""
    return DIGITS_SIZE if spec == "digits" else IMAGE_SIZE


def load_data(spec: str, *, data_dir: str | pathlib.Path | None = None, download: bool = False,
              seed: int = 0, input_size: int | None = None) -> DataSet:
    """Load the data set named by ``spec`` (see the module docstring) with splits fixed by ``seed``, its
    images brought to ``input_size`` pixels square (default :func:`default_input_size`).

    Raises:
        InputError: unknown name, a missing folder, a bad ``input_size``, or a torchvision data set absent
            from ``data_dir`` without ``download``.
    """
    check_data_spec(spec)
    size = default_input_size(spec) if input_size is None else input_size
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_INPUT_SIZE:
        raise InputError(f"--input-size {size!r} is not allowed; allowed: an integer >= {MIN_INPUT_SIZE} (pixels)")
    if spec == "digits":
        return _digits(seed, size)
    if spec == "shapes":  # procedural coloured shapes, generated offline (search/_synthetic.py)
        return _shapes(seed, size)
    if spec.startswith("imagefolder:"):
        return _imagefolder(pathlib.Path(spec.split(":", 1)[1]).expanduser(), seed, size)
    return _torchvision(spec, data_dir, download, seed, size)


# ----------------------------------------------------------------------------------- helpers
def _permutation(n: int, seed: int) -> "torch.Tensor":
    import torch

    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _normalise(train: "torch.Tensor", *others: "torch.Tensor") -> tuple[list["torch.Tensor"], "torch.Tensor", "torch.Tensor"]:
    """Per-channel standardisation with the training split's statistics; the tensors, the mean and the std."""
    mean = train.mean(dim=(0, 2, 3), keepdim=True)
    std = train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return [(t - mean) / std for t in (train, *others)], mean.flatten(), std.flatten()


def _resize(x: "torch.Tensor", size: int = IMAGE_SIZE) -> "torch.Tensor":
    """Bring (N, C, H, W) images to ``size``: zero-pad when a little smaller, else interpolate."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    if h == w and size - 8 <= h < size and (size - h) % 2 == 0:
        p = (size - h) // 2
        return F.pad(x, (p, p, p, p))
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def _from_arrays(name: str, key: str, x_train: "torch.Tensor", y_train: "torch.Tensor",
                 x_test: "torch.Tensor", y_test: "torch.Tensor", classes: "list[str] | tuple[str, ...]", seed: int,
                 x_val: "torch.Tensor | None" = None, y_val: "torch.Tensor | None" = None,
                 size: int = IMAGE_SIZE) -> DataSet:
    """Shuffle, carve a validation split out of train when none is given, resize and normalise.

    Images come in scaled to [0, 1]; ``key`` gets the size appended."""
    perm = _permutation(len(y_train), seed)
    x_train, y_train = x_train[perm], y_train[perm]
    if x_val is None or y_val is None:
        n_val = max(1, min(VAL_MAX, int(round(len(y_train) * VAL_FRACTION))))
        x_val, y_val = x_train[:n_val], y_train[:n_val]
        x_train, y_train = x_train[n_val:], y_train[n_val:]
    tperm = _permutation(len(y_test), seed + 1)
    x_test, y_test = x_test[tperm], y_test[tperm]
    xs, mean, std = _normalise(*(_resize(x.float(), size) for x in (x_train, x_val, x_test)))
    ys = [y.long() for y in (y_train, y_val, y_test)]
    train, val, test = (Split(x.contiguous(), y) for x, y in zip(xs, ys))
    shape = tuple(int(d) for d in train.x.shape[1:])
    logger.info("loaded %s: %d/%d/%d samples", name, len(train), len(val), len(test))
    return DataSet(name=name, key=f"{key}-{size}px", train=train, val=val, test=test, num_classes=len(classes),
                   input_shape=shape, mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std),
                   classes=tuple(str(c) for c in classes))  # type: ignore[arg-type]


def _digits(seed: int, size: int) -> DataSet:
    """scikit-learn's 1,797 digits: 60% train, 20% validation, 20% test."""
    import torch
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    perm = _permutation(len(y), seed)
    x, y = x[perm], y[perm]
    n = len(y)
    n_test = n_val = int(round(0.2 * n))
    n_train = n - n_val - n_test
    return _from_arrays(
        "digits", f"digits-s{seed}", x[:n_train], y[:n_train], x[n_train + n_val:], y[n_train + n_val:],
        [str(d) for d in range(10)], seed, x_val=x[n_train:n_train + n_val], y_val=y[n_train:n_train + n_val],
        size=size,
    )


def _shapes(seed: int, size: int, splits: tuple[int, int, int] = SHAPES_SPLITS) -> DataSet:
    """The ``shapes`` data set: train, validation and test generated from disjoint seeds derived from ``seed``."""
    import torch

    n_train, n_val, n_test = splits
    parts = [make_shapes(n, seed=1000 * seed + k, size=SHAPES_SIZE) for k, n in enumerate((n_train, n_val, n_test))]
    (xt, yt), (xv, yv), (xs, ys) = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in parts]
    return _from_arrays("shapes", f"shapes-v1-{n_train}-{n_val}-{n_test}-s{seed}", xt, yt, xs, ys, SHAPES_CLASSES,
                        seed, x_val=xv, y_val=yv, size=size)


#: ``--data`` names of the torchvision data sets and their classes in ``torchvision.datasets``.
_TORCHVISION = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


def _torchvision(name: str, data_dir: str | pathlib.Path | None, download: bool, seed: int, size: int) -> DataSet:
    import torch
    import torchvision

    root = pathlib.Path(data_dir).expanduser() if data_dir is not None else cache_dir() / "data"
    if data_dir is not None and not download and not root.is_dir():
        raise InputError(f"--data-dir {root} does not exist (add --download to fetch {name} there)")
    cls = getattr(torchvision.datasets, _TORCHVISION[name])
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except RuntimeError as exc:
        if not download:
            raise InputError(f"--data {name} was not found in {root} (add --download to fetch it): {exc}") from None
        raise InputError(f"--data {name} could not be downloaded to {root}: {exc}") from None

    def arrays(ds: object) -> tuple["torch.Tensor", "torch.Tensor"]:
        data = torch.as_tensor(ds.data)  # type: ignore[attr-defined]
        x = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)
        return x.float() / 255.0, torch.as_tensor(ds.targets, dtype=torch.int64)  # type: ignore[attr-defined]

    x_train, y_train = arrays(train)
    x_test, y_test = arrays(test)
    return _from_arrays(name, f"{name}-s{seed}", x_train, y_train, x_test, y_test, list(train.classes), seed,
                        size=size)


def _imagefolder(path: pathlib.Path, seed: int, size: int) -> DataSet:
    """A folder of class sub-folders (70/15/15 split), or train/ [val/] test/ folders of them."""
    import torch
    import torchvision
    from torchvision import transforms

    tf = transforms.Compose([
        transforms.Lambda(lambda im: im.convert("RGB")),
        transforms.Resize((size, size)),
        transforms.ToTensor(),
    ])

    def read(folder: pathlib.Path) -> tuple["torch.Tensor", "torch.Tensor", list[str]]:
        try:
            ds = torchvision.datasets.ImageFolder(str(folder), transform=tf)
        except (FileNotFoundError, RuntimeError, OSError) as exc:
            raise InputError(f"--data imagefolder:{path}: {exc}") from None
        if len(ds) == 0:
            raise InputError(f"--data imagefolder:{path}: no images found in {folder}")
        xs, ys = zip(*(ds[i] for i in range(len(ds))))
        return torch.stack(xs), torch.tensor(ys, dtype=torch.int64), list(ds.classes)

    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:10]
    key = f"imagefolder-{digest}-s{seed}"
    if (path / "train").is_dir() and (path / "test").is_dir():
        x_train, y_train, classes = read(path / "train")
        x_test, y_test, test_classes = read(path / "test")
        if test_classes != classes:
            raise InputError(f"--data imagefolder:{path}: train/ and test/ have different class folders")
        x_val = y_val = None
        if (path / "val").is_dir():
            x_val, y_val, _ = read(path / "val")
        return _from_arrays(f"imagefolder:{path}", key, x_train, y_train, x_test, y_test, classes, seed,
                            x_val=x_val, y_val=y_val, size=size)
    x, y, classes = read(path)
    if len(classes) < 2:
        raise InputError(f"--data imagefolder:{path}: needs at least 2 class sub-folders, found {len(classes)}")
    perm = _permutation(len(y), seed)
    x, y = x[perm], y[perm]
    n_test = n_val = max(1, int(round(0.15 * len(y))))
    n_train = len(y) - n_val - n_test
    if n_train < 1:
        raise InputError(f"--data imagefolder:{path}: {len(y)} images are too few to split into train/val/test")
    return _from_arrays(f"imagefolder:{path}", key, x[:n_train], y[:n_train], x[n_train + n_val:],
                        y[n_train + n_val:], classes, seed, x_val=x[n_train:n_train + n_val],
                        y_val=y[n_train:n_train + n_val], size=size)
