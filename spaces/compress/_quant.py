"""Quantisation: BatchNorm folding, fake quantisation (QAT and PTQ) and the QDQ ONNX export.

Bit widths per ``Conv2d``/``Linear`` module:

- ``8``: int8 weights (per output channel, symmetric) and uint8 activations (per tensor, affine);
- ``4``: int4 weights (per output channel, symmetric) and uint8 activations;
- ``2``: ternary weights {-a, 0, +a} per output channel (TWN) and uint8 activations;
- ``1``: binary weights {-a, +a} per output channel (BinaryConnect's sign, XNOR-Net's scale a = mean |w|)
  and uint8 activations. ONNX Runtime has no binary or ternary kernels: the export stores these weights as
  int8 values in {-1, 0, 1} with the scale a, so they run as int8 (``QLinearConv``); their 1 or 2 bits
  are a size figure (the model's metadata names these initializers, see ``latency_models``);
- ``16``: float16 weights, inputs and outputs (float16 rounding);
- ``32``: untouched float32.

Activations are quantised where ONNX Runtime expects them in a QDQ graph, so that it fuses
``DequantizeLinear -> Conv -> QuantizeLinear`` into ``QLinearConv``: the input of every int layer and the
output of every int layer *after* its BatchNorm and ReLU/ReLU6 (ONNX Runtime drops a ReLU followed by a
quantiser whose zero point is 0), and the output of residual adds and concatenations whose inputs are all
quantised. A quantised tensor is quantised once for all of its users, so the PyTorch model and the exported
graph compute the same numbers.

Per-channel symmetric weight quantisation commutes with BatchNorm folding (folding scales each output
channel by one factor), so QAT trains with BatchNorm unfolded and the export folds it without changing the
quantised weights.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from spaces.compress._export import export_onnx
from spaces.compress._fx import is_add, set_module, target_name, to_graph_module, trace_graph, unit_end

if TYPE_CHECKING:
    import onnx
    import torch

__all__ = [
    "QUANT_BITS",
    "act_quantizers",
    "calibrate",
    "export_onnx_quantized",
    "fold_batchnorm",
    "prepare_qat",
    "quantized_layers",
]

logger = logging.getLogger(__name__)

#: Supported bit widths.
QUANT_BITS = (1, 2, 4, 8, 16, 32)
_INT_BITS = (1, 2, 4, 8)
#: Metadata key of the exported model naming its binary / ternary int8 initializers (as latency_models reads it).
WEIGHT_BITS_KEY = "karumi.weight_bits"
_CALIBRATION_METHODS = ("minmax", "percentile")
#: Opset of a QDQ graph that stores int4 weights (DequantizeLinear accepts INT4 from opset 21).
_INT4_OPSET = 21


def _quantize_module(module: "torch.nn.Module", bits: int) -> "torch.nn.Module":
    """A quantised copy of a ``Conv2d``/``Linear`` that shares its parameters."""
    import torch

    from spaces.compress._qmodules import QuantConv2d, QuantLinear

    new = copy.copy(module)
    for attr in ("_parameters", "_buffers", "_modules"):
        setattr(new, attr, dict(getattr(module, attr)))
    new.__class__ = QuantConv2d if isinstance(module, torch.nn.Conv2d) else QuantLinear
    new.bits = int(bits)
    new.exporting = False
    return new


def quantized_layers(model: "torch.nn.Module") -> dict[str, int]:
    """Qualified names of the fake-quantised layers of a prepared model, mapped to their bits."""
    from spaces.compress._qmodules import QuantLayer

    return {name: m.bits for name, m in model.named_modules() if isinstance(m, QuantLayer)}


def act_quantizers(model: "torch.nn.Module") -> list["torch.nn.Module"]:
    """The activation fake quantisers of a prepared model."""
    from spaces.compress._qmodules import ActFakeQuant

    return [m for m in model.modules() if isinstance(m, ActFakeQuant)]


# ----------------------------------------------------------------------------------------------------------
def _check_module_bits(model: "torch.nn.Module", module_bits: Mapping[str, int]) -> dict[str, int]:
    import torch

    modules = dict(model.named_modules())
    checked = {}
    for name, bits in module_bits.items():
        if bits not in QUANT_BITS:
            raise ValueError(f"module_bits[{name!r}]={bits!r} is not supported; allowed: {QUANT_BITS}")
        if not isinstance(modules.get(name), (torch.nn.Conv2d, torch.nn.Linear)):
            raise ValueError(f"module_bits names {name!r}, which is not a Conv2d or Linear of the model")
        checked[name] = int(bits)
    return checked


def fold_batchnorm(model: "torch.nn.Module") -> "torch.nn.Module":
    """Fold every ``BatchNorm2d`` that directly follows a ``Conv2d`` into it, in place; returns ``model``.

    The BatchNorm module is replaced by ``nn.Identity``; the convolution gains a bias (torch's
    ``fuse_conv_bn_weights``). Uses the running statistics (inference semantics), so call it on a model in
    eval mode. A BatchNorm module used at two
    places, or fed by anything other than a single-user convolution, is left alone.
    """
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_weights  # the folding arithmetic; this finds the pairs

    graph = trace_graph(model)
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    folded = 0
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), torch.nn.BatchNorm2d):
            continue
        src = node.args[0]
        if not (hasattr(src, "op") and src.op == "call_module" and len(src.users) == 1):
            continue
        conv, bn = modules.get(src.target), modules[node.target]
        if not isinstance(conv, torch.nn.Conv2d) or calls[node.target] != 1 or calls[src.target] != 1:
            continue
        if not bn.track_running_stats or bn.running_var is None:
            continue
        with torch.no_grad():
            conv.weight, conv.bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                                          bn.eps, bn.weight, bn.bias)
        set_module(model, node.target, torch.nn.Identity())
        folded += 1
    logger.debug("folded %d BatchNorm layers", folded)
    return model


def prepare_qat(model: "torch.nn.Module", module_bits: Mapping[str, int]) -> "torch.nn.Module":
    """A fake-quantised copy of ``model`` (a ``torch.fx.GraphModule``) at the given per-layer bits.

    ``module_bits`` maps qualified ``Conv2d``/``Linear`` names to 1, 2, 4, 8, 16 or 32 (names absent stay 32).
    Weights are fake-quantised per output channel (symmetric, straight-through gradient); activations
    per tensor (uint8, affine) at the places described in the module docstring, with ranges observed
    during training (moving average) or set by :func:`calibrate`. Module names and parameter names are
    kept, so ``state_dict`` keys of the layers match the original model. ``model`` is not modified.
    """
    from torch import fx

    from spaces.compress._qmodules import ActFakeQuant as act

    bits = _check_module_bits(model, module_bits)
    gm = to_graph_module(copy.deepcopy(model))
    for name, b in bits.items():
        if b != 32:
            set_module(gm, name, _quantize_module(gm.get_submodule(name), b))
    modules = dict(gm.named_modules())
    graph = gm.graph
    quantised: dict[fx.Node, fx.Node] = {}  # node -> its quantiser node
    quantisers: set[fx.Node] = set()
    counter = [0]

    def quantise(node: fx.Node) -> fx.Node:
        if node in quantised:
            return quantised[node]
        if is_quantised(node):
            return node
        counter[0] += 1
        qname = f"act_quant_{counter[0]}"
        gm.add_submodule(qname, act())
        with graph.inserting_after(node):
            qnode = graph.call_module(qname, (node,))
        node.replace_all_uses_with(qnode, delete_user_cb=lambda user: user is not qnode)
        quantised[node] = qnode
        quantisers.add(qnode)
        return qnode

    def is_quantised(arg: Any) -> bool:
        return arg in quantisers or (
            isinstance(arg, fx.Node) and arg.op == "call_module" and isinstance(modules.get(arg.target), act))

    for node in list(graph.nodes):
        if node.op == "call_module" and bits.get(node.target, 32) in _INT_BITS:
            src = node.args[0]
            if isinstance(src, fx.Node):
                quantise(src)
            quantise(unit_end(node, modules))
        elif is_add(node) or (node.op == "call_function" and target_name(node) == "cat"):
            args = node.args[0] if target_name(node) == "cat" else node.args
            tensors = [a for a in args if isinstance(a, fx.Node)]
            if tensors and all(is_quantised(a) for a in tensors):
                quantise(unit_end(node, modules))
    graph.lint()
    gm.recompile()
    return gm


def calibrate(model: "torch.nn.Module", batches: Iterable["torch.Tensor"], *, method: str = "minmax",
              percentile: float = 99.99) -> "torch.nn.Module":
    """Post-training quantisation: set every activation range of a prepared model from ``batches``.

    ``method="minmax"`` uses the extreme values seen; ``"percentile"`` clips at the ``percentile`` (and
    ``100 - percentile``) of the values seen, which ignores rare outliers. Runs in eval mode without
    gradients; returns ``model`` (modified in place), ready for evaluation or export.
    """
    import torch

    if method not in _CALIBRATION_METHODS:
        raise ValueError(f"method={method!r} is not supported; allowed: {', '.join(_CALIBRATION_METHODS)}")
    if not 50.0 < percentile <= 100.0:
        raise ValueError(f"percentile={percentile!r} must be in (50, 100]")
    quantizers = act_quantizers(model)
    if not quantizers:
        raise ValueError("model has no activation quantisers: call prepare_qat(model, module_bits) first")
    was_training = model.training
    model.eval()
    for q in quantizers:
        q.mode, q._samples = "observe", []
    seen = 0
    with torch.no_grad():
        for batch in batches:
            model(batch)
            seen += 1
    if seen == 0:
        raise ValueError("batches is empty: calibration needs at least one batch")
    gen = torch.Generator().manual_seed(0)
    for q in quantizers:
        values = torch.cat([s.reshape(-1) for s in q._samples])
        q._samples = []
        if method == "minmax":
            lo, hi = values.min(), values.max()
        else:
            if values.numel() > 1_000_000:
                values = values[torch.randint(values.numel(), (1_000_000,), generator=gen)]
            p = torch.tensor([1.0 - percentile / 100.0, percentile / 100.0], dtype=values.dtype)
            lo, hi = torch.quantile(values, p)
        q.set_range(float(lo), float(hi))
        q.mode = "qat"
    model.train(was_training)
    return model


# ----------------------------------------------------------------------------------------------------------
def export_onnx_quantized(model: "torch.nn.Module", module_bits: Mapping[str, int], input_shape: tuple[int, ...],
                          path: str | None = None, *, calibration: Iterable["torch.Tensor"] | None = None,
                          calibration_method: str = "minmax", dynamic_batch: bool = False) -> "onnx.ModelProto":
    """The deployable QDQ ONNX model of ``model`` at ``module_bits`` (the one exporter for quantised models).

    ``model`` is either prepared (:func:`prepare_qat`, trained or calibrated: its own activation ranges are
    used, so the ONNX model computes what the fake-quantised PyTorch model computes) or a float model, which
    is prepared here and calibrated on ``calibration`` batches (or, when none are given, on 4 batches of
    standard normal noise: correct graph and speed, meaningless accuracy; a warning is logged).

    The graph follows the format ONNX Runtime fuses into ``QLinearConv``: uint8 per-tensor activations via
    ``QuantizeLinear``/``DequantizeLinear``; int8 (or int4, opset 21) per-channel symmetric weight
    initializers through ``DequantizeLinear(axis=0)``; int32 biases at scale ``s_in * s_w``; float16 layers
    store float16 weights with ``Cast`` around them. BatchNorm is folded first; IR version 10.
    """
    import onnx

    if not act_quantizers(model) and not quantized_layers(model):
        prepared = prepare_qat(model, module_bits)
        if any(b in _INT_BITS for b in module_bits.values()):
            if calibration is None:
                import torch

                logger.warning("export_onnx_quantized: no calibration data; activation ranges from random noise")
                gen = torch.Generator().manual_seed(0)
                calibration = [torch.randn((8, *input_shape), generator=gen) for _ in range(4)]
            calibrate(prepared, calibration, method=calibration_method)
    else:
        prepared = copy.deepcopy(model)
        declared = quantized_layers(prepared)
        wanted = {k: v for k, v in module_bits.items() if v != 32}
        if declared != wanted:
            raise ValueError(
                f"module_bits={dict(module_bits)} does not match the bits the model was prepared with ({declared})"
            )
    prepared.eval()
    fold_batchnorm(prepared)
    for m in prepared.modules():
        if hasattr(m, "exporting"):
            m.exporting = True
    layer_bits = quantized_layers(prepared)
    weights = {f"{name}.weight": (name, b) for name, b in layer_bits.items()}
    low = {}
    if any(b in (1, 2) for b in layer_bits.values()):
        from spaces.compress._qmodules import low_bit_weight

        for name, b in layer_bits.items():
            if b in (1, 2):
                codes, scale = low_bit_weight(prepared.get_submodule(name).weight, b)
                low[f"{name}.weight"] = (codes.numpy(), scale.numpy())
    proto = export_onnx(prepared, tuple(input_shape), dynamic_batch=dynamic_batch)
    proto = _rewrite_qdq(proto, weights, low)
    onnx.checker.check_model(proto)
    if path is not None:
        onnx.save(proto, path)
    return proto


def _rewrite_qdq(proto: "onnx.ModelProto", weights: Mapping[str, tuple[str, int]],
                 low: "Mapping[str, tuple[Any, Any]] | None" = None) -> "onnx.ModelProto":
    """Store quantised weights as int8/int4 (or float16) initializers behind DequantizeLinear (or Cast).

    ``low`` gives the (codes, scale) of binary / ternary weights, stored as int8 codes at that scale."""
    low = low or {}
    low_names: dict[str, int] = {}
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from spaces.compress._qmodules import qmax as _qmax

    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    # Identity nodes of initializers (the exporter deduplicates equal constants): use the source directly.
    alias: dict[str, str] = {}
    kept_nodes = []
    outputs = {o.name for o in graph.output}
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in outputs:
            alias[node.output[0]] = node.input[0]
        else:
            kept_nodes.append(node)
    for node in kept_nodes:
        for i, name in enumerate(node.input):
            node.input[i] = alias.get(name, name)
    producer = {out: node for node in kept_nodes for out in node.output}

    def const(name: str) -> "np.ndarray":
        return numpy_helper.to_array(inits[name])

    new_inits: list[onnx.TensorProto] = []
    new_nodes: list[onnx.NodeProto] = []
    int4 = False
    taken = set(inits) | {out for node in kept_nodes for out in node.output}

    def unique(base: str) -> str:
        """A fresh name prefix (the exporter may share one initializer between layers with equal values)."""
        name, i = base, 1
        while any(f"{name}{suffix}" in taken for suffix in ("_quantized", "_fp16", "_dequantized")):
            name, i = f"{base}_{i}", i + 1
        taken.update(f"{name}{suffix}" for suffix in ("_quantized", "_scale", "_zero_point", "_dequantized", "_fp16"))
        return name
    for node in kept_nodes:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 2 or node.input[1] not in weights:
            new_nodes.append(node)
            continue
        wname = node.input[1]
        _, bits = weights[wname]
        w = const(wname).astype(np.float32)
        bname = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if bits == 16:
            cast_in = f"{node.output[0]}_input_fp16"
            new_nodes.append(helper.make_node("Cast", [node.input[0]], [cast_in], to=TensorProto.FLOAT16,
                                              name=f"{node.name}_cast_in"))
            prefix = unique(wname)
            new_inits.append(numpy_helper.from_array(w.astype(np.float16), f"{prefix}_fp16"))
            node.input[0], node.input[1] = cast_in, f"{prefix}_fp16"
            if bname is not None:
                bprefix = unique(prefix[: -len(".weight")] + ".bias" if prefix.endswith(".weight") else f"{prefix}.bias")
                new_inits.append(numpy_helper.from_array(const(bname).astype(np.float16), f"{bprefix}_fp16"))
                node.input[2] = f"{bprefix}_fp16"
            out = node.output[0]
            node.output[0] = f"{out}_fp16"
            new_nodes.append(node)
            new_nodes.append(helper.make_node("Cast", [node.output[0]], [out], to=TensorProto.FLOAT,
                                              name=f"{node.name}_cast_out"))
            continue
        qmax = _qmax(bits) if bits not in (1, 2) else 1
        if wname in low:
            scale = np.asarray(low[wname][1], dtype=np.float32)
        else:
            amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
            scale = np.maximum(amax / np.float32(qmax), np.float32(1e-12)).astype(np.float32)
        src = producer.get(node.input[0])
        s_in = None
        if bname is not None and src is not None and src.op_type == "DequantizeLinear" and src.input[1] in inits:
            s_in = np.float32(const(src.input[1]).reshape(-1)[0])
            # An int32 bias must fit: widen the scale of (near-)zero weight channels whose bias would not.
            need = np.abs(const(bname).astype(np.float64)) / (float(s_in) * 2.0**30)
            if wname not in low:  # binary / ternary scales are the weights themselves: never widened
                scale = np.maximum(scale, need.astype(np.float32))
        shape = (-1,) + (1,) * (w.ndim - 1)
        if wname in low:
            q = np.asarray(low[wname][0])
        else:
            q = np.clip(np.round(w / scale.reshape(shape)), -qmax - 1, qmax)
        if bits == 4:
            import ml_dtypes

            int4 = True
            q_arr, zp = q.astype(ml_dtypes.int4), np.zeros(w.shape[0], dtype=ml_dtypes.int4)
        else:
            q_arr, zp = q.astype(np.int8), np.zeros(w.shape[0], dtype=np.int8)
        prefix = unique(wname)
        if bits in (1, 2):
            low_names[f"{prefix}_quantized"] = bits
        new_inits += [
            numpy_helper.from_array(q_arr, f"{prefix}_quantized"),
            numpy_helper.from_array(scale, f"{prefix}_scale"),
            numpy_helper.from_array(zp, f"{prefix}_zero_point"),
        ]
        new_nodes.append(helper.make_node(
            "DequantizeLinear", [f"{prefix}_quantized", f"{prefix}_scale", f"{prefix}_zero_point"],
            [f"{prefix}_dequantized"], axis=0, name=f"{prefix}_DequantizeLinear"))
        node.input[1] = f"{prefix}_dequantized"
        if s_in is not None:
            b_scale = (scale * s_in).astype(np.float32)
            b_q = np.round(const(bname).astype(np.float64) / b_scale).astype(np.int32)
            bprefix = unique(prefix[: -len(".weight")] + ".bias" if prefix.endswith(".weight") else f"{prefix}.bias")
            new_inits += [
                numpy_helper.from_array(b_q, f"{bprefix}_quantized"),
                numpy_helper.from_array(b_scale, f"{bprefix}_scale"),
                numpy_helper.from_array(np.zeros(w.shape[0], dtype=np.int32), f"{bprefix}_zero_point"),
            ]
            new_nodes.append(helper.make_node(
                "DequantizeLinear", [f"{bprefix}_quantized", f"{bprefix}_scale", f"{bprefix}_zero_point"],
                [f"{bprefix}_dequantized"], axis=0, name=f"{bprefix}_DequantizeLinear"))
            node.input[2] = f"{bprefix}_dequantized"
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(new_inits)
    used = {name for node in graph.node for name in node.input} | outputs
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if int4:
        for opset in proto.opset_import:
            if opset.domain in ("", "ai.onnx"):
                opset.version = max(opset.version, _INT4_OPSET)
    proto.ir_version = 10
    if low_names:
        import json

        entry = proto.metadata_props.add()
        entry.key, entry.value = WEIGHT_BITS_KEY, json.dumps(low_names, sort_keys=True)
    return proto
