"""Activation sparsity: how many activations are exactly zero after each ReLU, and the MACs they feed.

A ReLU (or ReLU6) zeroes every negative pre-activation; a runtime or accelerator that skips zero inputs
(e.g. Eyeriss, SCNN, Cambricon-X) saves every multiply-accumulate whose input activation is zero.
**ONNX Runtime on a CPU does not skip them**: its convolutions are dense and compute every MAC, zero or not,
so these numbers describe a potential saving on such hardware, not a speed-up of the exported model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from spaces.compress._fx import is_activation, trace_graph

if TYPE_CHECKING:
    import torch

__all__ = ["ACTIVATION_SPARSITY_NOTE", "activation_sparsity"]

FORMAT_VERSION = 1
#: What the numbers mean for this project's runtime; part of every result.
ACTIVATION_SPARSITY_NOTE = ("ONNX Runtime on a CPU does not skip zero activations (its kernels are dense): "
                            "zero_input_macs is what a zero-skipping runtime or accelerator could save, not a "
                            "speed-up of the exported model")


def _batches(data: Any, batch_size: int) -> Iterable["torch.Tensor"]:
    import torch

    if isinstance(data, torch.Tensor):
        for i in range(0, len(data), batch_size):
            yield data[i:i + batch_size]
        return
    if hasattr(data, "x") and isinstance(getattr(data, "x"), torch.Tensor):  # a Split-like (x, y) object
        yield from _batches(data.x, batch_size)
        return
    for item in data:
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"data yields {type(x).__name__}; allowed: tensors or (x, y) pairs")
        yield x


def activation_sparsity(model: "torch.nn.Module", data: Any, *, batch_size: int = 64,
                        max_images: int | None = None) -> dict[str, Any]:
    """Zero activations after each ReLU of ``model`` on ``data``, and the MACs a zero-skipping runtime saves.

    Args:
        model: a ``torch.fx``-traceable model (run in eval mode, without gradients; not modified).
        data: input images: a tensor (N, C, H, W), an object with an ``x`` tensor (``search.Split``), or an
            iterable of tensors or ``(x, y)`` pairs.
        batch_size: images per forward pass when ``data`` is a tensor.
        max_images: stop after this many images (all by default).

    Returns a JSON-ready dict (``format_version`` 1):

    - ``images``: images seen;
    - ``relu``: per ReLU-like activation (module or function, graph order) ``{"name", "zero_fraction",
      "elements"}`` (elements per image);
    - ``layers``: per ``Conv2d``/``Linear`` ``{"name", "macs", "zero_input_macs", "zero_input_fraction"}``,
      MACs per image; ``zero_input_macs`` counts the MACs whose input activation is exactly zero (zero
      padding is not counted), averaged over the images;
    - ``zero_fraction``: zeros over all ReLU outputs; ``macs``, ``zero_input_macs`` and
      ``skippable_fraction`` (their ratio) over all layers;
    - ``note``: :data:`ACTIVATION_SPARSITY_NOTE`.
    """
    import torch
    import torch.nn.functional as F
    from torch import fx

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
    if max_images is not None and (not isinstance(max_images, int) or max_images < 1):
        raise ValueError(f"max_images={max_images!r} must be a positive integer or None")
    graph = trace_graph(model)
    gm = fx.GraphModule(model, graph)
    modules = dict(model.named_modules())
    relu: dict[str, list[int]] = {}  # name -> [zeros, elements]
    layers: dict[str, list[float]] = {}  # name -> [macs per image, zero-input MACs summed over images]

    class _Probe(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            out = super().run_node(n)
            if n.op in ("call_module", "call_function", "call_method") and is_activation(n, modules) \
                    and isinstance(out, torch.Tensor):
                name = n.target if n.op == "call_module" else n.name
                z = relu.setdefault(name, [0, 0])
                z[0] += int((out == 0).sum())
                z[1] += out.numel()
            if n.op == "call_module":
                m = modules[n.target]
                x = self.env.get(n.args[0]) if n.args and isinstance(n.args[0], fx.Node) else None
                if isinstance(x, torch.Tensor) and isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                    _count(n.target, m, x, out)
            return out

    def _count(name: str, m: "torch.nn.Module", x: "torch.Tensor", out: "torch.Tensor") -> None:
        zero = (x == 0).to(torch.float32)
        if isinstance(m, torch.nn.Conv2d):
            g = m.groups
            ones = torch.ones(g, m.in_channels // g, *m.kernel_size)
            per_group = F.conv2d(zero, ones, stride=m.stride, padding=m.padding, dilation=m.dilation, groups=g)
            zero_macs = float(per_group.sum()) * (m.out_channels // g)
            macs = out[0].numel() * (m.in_channels // g) * m.kernel_size[0] * m.kernel_size[1]
        else:
            zero_macs = float(zero.sum()) * m.out_features
            macs = out[0].numel() * m.in_features
        entry = layers.setdefault(name, [float(macs), 0.0])
        entry[1] += zero_macs

    was_training = model.training
    model.eval()
    images = 0
    try:
        with torch.no_grad():
            probe = _Probe(gm)
            for batch in _batches(data, batch_size):
                if max_images is not None:
                    batch = batch[: max_images - images]
                if len(batch) == 0:
                    break
                probe.run(batch)
                images += len(batch)
                if max_images is not None and images >= max_images:
                    break
    finally:
        model.train(was_training)
    if images == 0:
        raise ValueError("data is empty: activation sparsity needs at least one image")
    relu_rows = [{"name": k, "zero_fraction": z / n if n else 0.0, "elements": n // images} for k, (z, n) in relu.items()]
    layer_rows = [{"name": k, "macs": int(macs), "zero_input_macs": zm / images,
                   "zero_input_fraction": zm / images / macs if macs else 0.0} for k, (macs, zm) in layers.items()]
    zeros, elements = sum(z for z, _ in relu.values()), sum(n for _, n in relu.values())
    macs = sum(r["macs"] for r in layer_rows)
    zero_macs = sum(r["zero_input_macs"] for r in layer_rows)
    return {
        "format_version": FORMAT_VERSION,
        "images": images,
        "relu": relu_rows,
        "layers": layer_rows,
        "zero_fraction": zeros / elements if elements else 0.0,
        "macs": int(macs),
        "zero_input_macs": zero_macs,
        "skippable_fraction": zero_macs / macs if macs else 0.0,
        "note": ACTIVATION_SPARSITY_NOTE,
    }
