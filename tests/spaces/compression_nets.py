"""Small real CNNs for the compression tests: residual adds, depthwise and grouped convolutions, channel
shuffle and concatenation, plus a quick digits training loop (8x8 images, ships with scikit-learn)."""

from __future__ import annotations

import functools

import torch
from torch import nn


class Block(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, residual add."""

    def __init__(self, c: int, expand: int = 2) -> None:
        super().__init__()
        h = c * expand
        self.expand = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(inplace=True))
        self.dw = nn.Sequential(nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h),
                                nn.ReLU6(inplace=True))
        self.project = nn.Sequential(nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.dw(self.expand(x)))


class ShuffleUnit(nn.Module):
    """Grouped 1x1 conv, channel shuffle, concat with a second branch."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.group = nn.Sequential(nn.Conv2d(c, c, 1, groups=2, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.side = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.merge = nn.Sequential(nn.Conv2d(2 * c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.group(x)
        b, c, h, w = a.shape
        a = a.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)
        return self.merge(torch.cat([a, self.side(x)], dim=1))


class TinyNet(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        self.block1 = Block(width)
        self.block2 = Block(width)
        self.shuffle = ShuffleUnit(width)
        self.head = nn.Sequential(nn.Conv2d(width, 2 * width, 1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.shuffle(self.block2(self.block1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(self.head(x)), 1))


def conv_linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@functools.lru_cache(maxsize=1)
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn digits as (x_train, y_train, x_val, y_val), 1x8x8 float images scaled to about [-1, 2]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - 0.3) / 0.4
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:1400], y[:1400], x[1400:], y[1400:]


@functools.lru_cache(maxsize=1)
def trained_tiny_state() -> dict[str, torch.Tensor]:
    """State dict of a TinyNet trained 4 epochs on digits (about 2 s on one core), cached per session."""
    torch.manual_seed(0)
    model = TinyNet()
    x, y, _, _ = digits()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(4):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {k: v.clone() for k, v in model.state_dict().items()}


def trained_tiny() -> TinyNet:
    model = TinyNet()
    model.load_state_dict(trained_tiny_state())
    return model.eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def residual_teacher(*, in_channels: int = 3, num_classes: int = 10, width: int = 16, seed: int = 0) -> nn.Module:
    """A small residual CNN (stem, residual block, strided conv, inverted residual, 1x1 head, classifier):
    the coupled layers the ``prune`` space must group (a residual stream, a depthwise conv and its
    expansion). Seeded initialisation."""

    class _Residual(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(c)
            self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(c)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.bn2(self.conv2(nn.functional.relu(self.bn1(self.conv1(x)))))
            return nn.functional.relu(x + y)

    class _Inverted(nn.Module):
        def __init__(self, c: int, e: int) -> None:
            super().__init__()
            h = c * e
            self.expand = nn.Conv2d(c, h, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(h)
            self.dw = nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False)
            self.bn2 = nn.BatchNorm2d(h)
            self.project = nn.Conv2d(h, c, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(c)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = nn.functional.relu6(self.bn1(self.expand(x)))
            y = nn.functional.relu6(self.bn2(self.dw(y)))
            return x + self.bn3(self.project(y))

    class ResidualTeacher(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = width
            self.stem = nn.Conv2d(in_channels, w, 3, padding=1, bias=False)
            self.stem_bn = nn.BatchNorm2d(w)
            self.block1 = _Residual(w)
            self.down = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1, bias=False)
            self.down_bn = nn.BatchNorm2d(2 * w)
            self.block2 = _Inverted(2 * w, 2)
            self.head = nn.Conv2d(2 * w, 4 * w, 1, bias=False)
            self.head_bn = nn.BatchNorm2d(4 * w)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(4 * w, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = nn.functional.relu(self.stem_bn(self.stem(x)))
            x = self.block1(x)
            x = self.block2(nn.functional.relu(self.down_bn(self.down(x))))
            x = nn.functional.relu(self.head_bn(self.head(x)))
            return self.classifier(self.pool(x).flatten(1))

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ResidualTeacher().eval()
