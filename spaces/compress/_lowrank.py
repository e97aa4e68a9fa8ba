"""Low-rank factorisation (truncated SVD) of 1x1 convolutions and linear layers."""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    import torch

from spaces.compress._fx import set_module

__all__ = ["factorize_lowrank", "lowrank_eligible"]

logger = logging.getLogger(__name__)


def lowrank_eligible(model: "torch.nn.Module") -> list[str]:
    """Qualified names of the layers :func:`factorize_lowrank` can factorise: ungrouped 1x1 ``Conv2d``
    (no padding, no dilation) and ``Linear``."""
    import torch

    names = []
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            names.append(name)
        elif (isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1
              and m.padding in ((0, 0), 0) and m.dilation == (1, 1)):
            names.append(name)
    return names


def _rank(ratio: float, out_features: int, in_features: int) -> int:
    return max(1, min(out_features, in_features, int(round(ratio * min(out_features, in_features)))))


def factorize_lowrank(model: "torch.nn.Module", rank_ratios: "Mapping[str, float] | float") -> "torch.nn.Module":
    """A copy of ``model`` whose 1x1 convolutions and linear layers are replaced by two thinner ones.

    A layer ``W`` (out × in) becomes ``B @ A`` with ``A = sqrt(S_r) V_r^T`` (r × in) and
    ``B = U_r sqrt(S_r)`` (out × r): the truncated SVD at rank ``r = round(ratio * min(out, in))`` (at least
    1), the best rank-``r`` approximation in Frobenius norm. The module ``name`` becomes a
    ``Sequential`` whose ``name.0`` (carrying the stride; a zero bias, so that every exported Conv/Gemm has
    one, as the latency kernels assume) and ``name.1`` (carrying the bias) are ordinary ``Conv2d``/``Linear`` layers, so pruning, quantisation and export treat them as usual. A ratio
    of 1 reproduces the layer exactly (up to float rounding). Parameters shrink only when
    ``r < out·in / (out + in)``.

    ``rank_ratios``: one ratio in (0, 1] for every eligible layer (see :func:`lowrank_eligible`), or per
    qualified layer name (others untouched).
    """
    import torch

    eligible = lowrank_eligible(model)
    if isinstance(rank_ratios, Mapping):
        for name, r in rank_ratios.items():
            if name not in eligible:
                raise ValueError(
                    f"rank_ratios names {name!r}, which is not a 1x1 Conv2d or Linear of the model; "
                    f"allowed: {', '.join(eligible) or 'none'}"
                )
        ratios = {n: float(r) for n, r in rank_ratios.items()}
    else:
        ratios = {n: float(rank_ratios) for n in eligible}
    for name, r in ratios.items():
        if not 0.0 < r <= 1.0:
            raise ValueError(f"rank ratio {r!r} for {name!r} must be in (0, 1]")
    result = copy.deepcopy(model)
    for name, ratio in ratios.items():
        m = result.get_submodule(name)
        w = m.weight.detach().reshape(m.weight.shape[0], -1).double()
        out_f, in_f = w.shape
        r = _rank(ratio, out_f, in_f)
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        root = s[:r].sqrt()
        a = (root[:, None] * vh[:r]).float()
        b = (u[:, :r] * root[None, :]).float()
        if isinstance(m, torch.nn.Linear):
            first = torch.nn.Linear(in_f, r)
            second = torch.nn.Linear(r, out_f, bias=m.bias is not None)
            first.weight.data.copy_(a)
            second.weight.data.copy_(b)
        else:
            first = torch.nn.Conv2d(in_f, r, 1, stride=m.stride)
            second = torch.nn.Conv2d(r, out_f, 1, bias=m.bias is not None)
            first.weight.data.copy_(a.reshape(r, in_f, 1, 1))
            second.weight.data.copy_(b.reshape(out_f, r, 1, 1))
        first.bias.data.zero_()
        if m.bias is not None:
            second.bias.data.copy_(m.bias.detach())
        if r * (in_f + out_f) >= out_f * in_f:
            logger.debug("low rank %s: rank %d of %dx%d does not reduce parameters", name, r, out_f, in_f)
        set_module(result, name, torch.nn.Sequential(first, second).to(m.weight.device))
    return result
