"""The distillation proxy: deterministic for a seed, teacher logits computed once."""

from __future__ import annotations

import torch

from search import ProxyEvaluator


class CountingTeacher(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(64, 4)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc(x.flatten(1)) * 5


def _student(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(32, 4),
    )


def _data() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(300, 1, 8, 8, generator=gen)
    y = (x[:, 0, :4].mean(dim=(1, 2)) > 0).long() + 2 * (x[:, 0, :, :4].mean(dim=(1, 2)) > 0).long()
    return (x[:200], y[:200]), (x[200:], y[200:])


def test_proxy_is_deterministic_and_computes_teacher_logits_once():
    train, val = _data()
    teacher = CountingTeacher()
    proxy = ProxyEvaluator(train, val, teacher, epochs=2, batch_size=32, seed=7)
    calls = teacher.calls
    assert calls == 1 and proxy.teacher_logits.shape == (200, 4)
    bits = {"0": 8, "5": 4}
    a = proxy(_student(0), bits)
    b = proxy(_student(0), bits)
    assert teacher.calls == calls  # trials never run the teacher
    assert a == b
    assert 0.0 <= a <= 1.0
    assert proxy.last_seconds > 0
    # The model passed in is not modified (each trial trains its own fake-quantised copy).
    fresh = _student(0)
    model = _student(0)
    proxy(model, bits)
    for (name, p), q in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(p, q), name


def test_fine_tune_returns_a_trained_fake_quant_model():
    train, val = _data()
    proxy = ProxyEvaluator(train, val, CountingTeacher(), epochs=1, batch_size=32)
    tuned = proxy.fine_tune(_student(1), {"0": 8}, epochs=3)
    assert not tuned.training
    names = {type(m).__name__ for m in tuned.modules()}
    assert {"QuantConv2d", "ActFakeQuant"} <= names
