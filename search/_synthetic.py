"""``shapes``: a procedural data set of coloured shapes and textures, generated offline, harder than digits.

Ten classes drawn at :data:`SIZE` x :data:`SIZE` RGB: disc, square, triangle, plus, ring, square frame, star,
striped square, checkered disc, crescent. Each image has a random position, scale, rotation, foreground
and background colour (a linear background gradient), and Gaussian pixel noise, so that colour and
position say nothing about the class and the textured classes need more than a silhouette. Generated with
numpy from a seed: the same seed gives the same images on every machine; nothing is downloaded.
"""

from __future__ import annotations

import logging
import numpy as np

__all__ = ["CLASSES", "SIZE", "SPLITS", "make_shapes"]

logger = logging.getLogger(__name__)

CLASSES = ("disc", "square", "triangle", "plus", "ring", "frame", "star", "striped-square", "checkered-disc",
           "crescent")
#: Side of the square images, pixels.
SIZE = 32
#: Images per split (train, val, test), balanced over the classes.
SPLITS = (2000, 500, 1000)
#: Standard deviation of the pixel noise (pixel values in [0, 1] before it).
NOISE = 0.08


def _mask(label: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coverage in [0, 1] of the shape ``label`` at local coordinates (x, y) (the shape spans about [-1, 1])."""
    r = np.hypot(x, y)
    if label == 0:
        inside = r < 0.9
    elif label == 1:
        inside = np.maximum(np.abs(x), np.abs(y)) < 0.75
    elif label == 2:  # an equilateral triangle: three half-planes
        inside = (y > -0.5) & (np.sqrt(3) * x + y < 1.0) & (-np.sqrt(3) * x + y < 1.0)
    elif label == 3:
        inside = ((np.abs(x) < 0.28) & (np.abs(y) < 0.95)) | ((np.abs(y) < 0.28) & (np.abs(x) < 0.95))
    elif label == 4:
        inside = (r < 0.95) & (r > 0.55)
    elif label == 5:
        inside = (np.maximum(np.abs(x), np.abs(y)) < 0.9) & (np.maximum(np.abs(x), np.abs(y)) > 0.55)
    elif label == 6:  # a five-pointed star in polar form
        inside = r < 0.45 + 0.5 * np.clip(np.cos(5 * np.arctan2(y, x)), 0, None) ** 2
    elif label == 7:
        inside = (np.maximum(np.abs(x), np.abs(y)) < 0.85) & (np.sin(x * 9.0) > 0)
    elif label == 8:
        inside = (r < 0.95) & ((np.floor(x * 2.6) + np.floor(y * 2.6)) % 2 == 0)
    elif label == 9:
        inside = (r < 0.9) & (np.hypot(x - 0.45, y) > 0.7)
    else:
        raise ValueError(f"label={label!r} is not allowed; allowed: 0..{len(CLASSES) - 1}")
    return inside.astype(np.float32)


def make_shapes(n: int, *, seed: int, size: int = SIZE, noise: float = NOISE) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (N, 3, size, size) float32 in about [0, 1] and their labels (N,) int64, balanced.

    Deterministic for ``seed``. Each image: a shape of random class, scale, rotation and position (kept
    inside the image), drawn with 2x2 supersampling in a random colour over a random background gradient,
    plus Gaussian noise of standard deviation ``noise``.
    """
    if n < 1:
        raise ValueError(f"n={n!r} must be a positive number of images")
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int64) % len(CLASSES)
    rng.shuffle(labels)
    sub = 2 * size  # 2x2 supersampling for smooth edges
    grid = (np.arange(sub, dtype=np.float32) + 0.5) / sub * 2.0 - 1.0
    gy, gx = np.meshgrid(grid, grid, indexing="ij")
    images = np.empty((n, 3, size, size), dtype=np.float32)
    for i, label in enumerate(labels):
        scale = rng.uniform(0.35, 0.7)
        theta = rng.uniform(0.0, 2.0 * np.pi)
        tx, ty = rng.uniform(-(0.95 - scale), 0.95 - scale, size=2)
        c, s = np.cos(theta), np.sin(theta)
        dx, dy = gx - tx, gy - ty
        lx, ly = (c * dx + s * dy) / scale, (-s * dx + c * dy) / scale
        cover = _mask(int(label), lx, ly).reshape(size, 2, size, 2).mean(axis=(1, 3))
        fg = rng.uniform(0.0, 1.0, size=3)
        bg0 = rng.uniform(0.0, 1.0, size=3)
        while np.abs(fg - bg0).sum() < 0.6:  # keep the shape visible against its background
            fg = rng.uniform(0.0, 1.0, size=3)
        direction = rng.uniform(0.0, 2.0 * np.pi)
        ramp = (np.cos(direction) * gx[::2, ::2] + np.sin(direction) * gy[::2, ::2]) * rng.uniform(0.0, 0.25)
        bg = np.clip(bg0[:, None, None] + ramp[None], 0.0, 1.0)
        images[i] = cover[None] * fg[:, None, None] + (1.0 - cover[None]) * bg
    images += rng.normal(0.0, noise, size=images.shape).astype(np.float32)
    return images, labels
