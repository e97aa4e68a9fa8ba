"""Knowledge distillation loss and training loop."""

from __future__ import annotations

import math

import pytest
import torch

from search import distill_train, hint_loss, kd_loss


def _by_hand(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, T: float, alpha: float) -> float:
    total_kl, total_ce = 0.0, 0.0
    for row_s, row_t, target in zip(s.tolist(), t.tolist(), y.tolist()):
        zs = [math.exp(v / T) for v in row_s]
        zt = [math.exp(v / T) for v in row_t]
        ps = [v / sum(zs) for v in zs]
        pt = [v / sum(zt) for v in zt]
        total_kl += sum(p * (math.log(p) - math.log(q)) for p, q in zip(pt, ps))
        e = [math.exp(v) for v in row_s]
        total_ce += -math.log(e[target] / sum(e))
    n = len(y)
    return T * T * alpha * total_kl / n + (1 - alpha) * total_ce / n


@pytest.mark.parametrize("T,alpha", [(4.0, 0.9), (1.0, 0.5), (2.5, 0.0), (8.0, 1.0)])
def test_kd_loss_matches_the_formula_by_hand(T, alpha):
    gen = torch.Generator().manual_seed(1)
    s = torch.randn(5, 7, generator=gen, dtype=torch.float64) * 3
    t = torch.randn(5, 7, generator=gen, dtype=torch.float64) * 3
    y = torch.tensor([0, 3, 6, 2, 2])
    got = float(kd_loss(s, t, y, temperature=T, alpha=alpha))
    assert got == pytest.approx(_by_hand(s, t, y, T, alpha), rel=1e-9, abs=1e-12)


def test_kd_loss_is_zero_kl_when_student_equals_teacher():
    logits = torch.randn(4, 10)
    y = torch.zeros(4, dtype=torch.long)
    assert float(kd_loss(logits, logits, y, alpha=1.0)) == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_refuses_bad_arguments():
    s = torch.randn(2, 3)
    with pytest.raises(ValueError, match="temperature=0"):
        kd_loss(s, s, torch.zeros(2, dtype=torch.long), temperature=0)
    with pytest.raises(ValueError, match="alpha=1.5 must be in"):
        kd_loss(s, s, torch.zeros(2, dtype=torch.long), alpha=1.5)
    with pytest.raises(ValueError, match="differs from teacher_logits shape"):
        kd_loss(s, torch.randn(2, 4), torch.zeros(2, dtype=torch.long))


def test_hint_loss_with_a_regressor():
    s, t = torch.randn(2, 4, 3, 3), torch.randn(2, 8, 3, 3)
    reg = torch.nn.Conv2d(4, 8, 1)
    with torch.no_grad():
        assert float(hint_loss(s, t, regressor=reg)) == pytest.approx(float(((reg(s) - t) ** 2).mean()), rel=1e-6)
    with pytest.raises(ValueError, match="pass a regressor"):
        hint_loss(s, t)


def test_distill_train_lowers_the_loss():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(128, 1, 8, 8, generator=gen)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    teacher_logits = torch.stack([-(x.mean(dim=(1, 2, 3))), x.mean(dim=(1, 2, 3))], dim=1) * 20
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 2))
    bits = {"0": 8, "4": 8}
    trained = distill_train(model, bits, (x, y), teacher_logits, epochs=30, lr=0.1, seed=0)
    with torch.no_grad():
        before = float(kd_loss(model(x), teacher_logits, y))
        after = float(kd_loss(trained(x), teacher_logits, y))
        acc = float((trained(x).argmax(1) == y).float().mean())
    assert after < 0.3 * before
    assert acc >= 0.9
    with pytest.raises(ValueError, match="teacher_logits has 10 rows for 128 training inputs"):
        distill_train(model, bits, (x, y), teacher_logits[:10], epochs=1)


def test_batchnorm_statistics_are_recalibrated_on_the_training_inputs():
    from search._distill import recalibrate_batchnorm

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    x = torch.randn(64, 1, 6, 6) * 3 + 1
    recalibrate_batchnorm(model, x, batch_size=64)
    with torch.no_grad():
        feats = model[0](x)
    torch.testing.assert_close(model[1].running_mean, feats.mean(dim=(0, 2, 3)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model[1].running_var, feats.var(dim=(0, 2, 3), unbiased=True), atol=1e-4, rtol=1e-4)
    assert model[1].momentum == 0.1 and not model.training
