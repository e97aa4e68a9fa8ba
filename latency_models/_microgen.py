"""One-kernel ONNX graphs, built with ``onnx.helper`` (no torch), the way the project's exports look.

- fp32 conv: ``Conv`` (BatchNorm already folded), then ``Relu`` or ``Clip(0, 6)`` as the exporter writes them
  (ONNX Runtime fuses them into the convolution).
- int8 (``bits=8``): QDQ. uint8 per-tensor activations (``QuantizeLinear``/``DequantizeLinear`` with a zero
  point), int8 symmetric per-channel weights through ``DequantizeLinear(axis=0)``, int32 bias through
  ``DequantizeLinear``, and ``QuantizeLinear`` after the output: ONNX Runtime fuses this into ``QLinearConv``.
- int4 (``bits=4``): as int8 but the weights are an INT4 initializer (ONNX Runtime runs a float conv on the
  dequantised weights: a size gain, not a speed gain).
- ternary / binary (``bits=2`` / ``1``): as int8, with int8 weights in {-1, 0, 1} / {-1, 1} and the per-channel
  scale a, as the project's export writes them (ONNX Runtime has no binary kernels: they run as int8).
- fp16 (``bits=16``): ``Cast`` to float16, the operator in float16, ``Cast`` back, then the activation in
  float32 (as the project's export writes it: ONNX Runtime's CPU float16 ``Clip`` is very slow).
- ``crelu``: ``Neg``, ``Concat(x, -x)``, then ``Relu`` / ``Clip(0, 6)``, as the students' export writes it.
- Activations as PyTorch's exporter writes them: ``HardSwish``, ``HardSigmoid(alpha=1/6, beta=0.5)``,
  ``Sigmoid``, and swish (SiLU) as ``Mul(x, Sigmoid(x))``. ``scale`` is ``Mul`` of the (1, C, H, W) input by a
  (1, C, 1, 1) second input; ``act`` the activation alone.
- ``add`` / ``concat`` / ``split`` / ``channel_shuffle`` / pools / ``linear`` (``Gemm``) likewise, with QDQ
  around them at 8 or 4 bits and casts at 16 bits; but a ``channel_shuffle`` at integer bits is one that reads
  an int8 layer's output (see ``spaces``' kernel lists and ``kernels_from_onnx``), which ONNX Runtime holds in
  uint8 channels-last (``QLinearConv`` runs NHWC) and shuffles with one strided uint8 ``Transpose`` merged with
  the layout's: its graph takes a (1, H, W, C) input, quantises it and runs that transpose (0, 4, 3, 1, 2) on
  (1, H, W, g, C/g) before reshaping to (1, C, H, W). Measured on an Intel Xeon (``experiments/results/
  int8_shuffle.md``), it takes the in-model node's time, several times a float shuffle's.

A one-kernel graph's latency includes the per-session-run overhead (input copy, dispatch): the predictor's
model-level fit removes it.
"""

from __future__ import annotations

import math
from typing import Any

from latency_models._kernel import Kernel

__all__ = ["kernel_graph", "standalone_io_mbytes", "IR_VERSION", "OPSET"]

IR_VERSION = 10
OPSET = 21


def standalone_io_mbytes(kernel: Kernel) -> float:
    """Megabytes that :func:`kernel_graph`'s graph of ``kernel`` takes in and gives out at batch 1 (float32 inputs
    and outputs, as every one-kernel graph has: a second input for ``add`` and ``scale``, every part of a
    ``split``). A session run of the graph alone passes them through ONNX Runtime's inputs and outputs, which a
    layer inside a whole model does not."""
    inputs = math.prod(kernel.input_shape)
    if kernel.op == "add":
        inputs *= 2
    elif kernel.op == "scale":
        inputs += kernel.input_shape[0]
    outputs = inputs if kernel.op == "split" else math.prod(kernel.output_shape)
    return 4.0 * (inputs + outputs) / 1e6


def kernel_graph(kernel: Kernel, *, seed: int = 0) -> Any:
    """An ``onnx.ModelProto`` (batch 1, float32 input and output) that executes ``kernel`` alone."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if not isinstance(kernel, Kernel):
        raise ValueError(f"kernel={kernel!r} must be a latency_models.Kernel")
    rng = np.random.default_rng(seed)
    nodes: list[Any] = []
    inits: list[Any] = []
    names = iter(range(10**6))
    low_bits: dict[str, int] = {}  # binary / ternary weight initializers, recorded in the model's metadata

    def fresh(prefix: str) -> str:
        return f"{prefix}_{next(names)}"

    def const(name: str, array: Any) -> str:
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(op: str, inputs: list[str], **attrs: Any) -> str:
        out = fresh(op.lower())
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    q = kernel.bits in (1, 2, 4, 8)
    half = kernel.bits == 16
    act_scale = 0.05

    def qdq(x: str, *, after_activation: bool = False) -> str:
        # after a ReLU / ReLU6 the exporter quantises with zero point 0 (ReLU6: range exactly [0, 6]), which
        # lets ONNX Runtime drop the activation and fuse DequantizeLinear -> Conv -> QuantizeLinear
        relu6 = after_activation and kernel.activation == "relu6"
        relu = after_activation and kernel.activation == "relu"
        s = const(fresh("s"), np.float32(6.0 / 255.0 if relu6 else act_scale))
        z = const(fresh("z"), np.uint8(0 if (relu or relu6) else 128))
        return node("DequantizeLinear", [node("QuantizeLinear", [x, s, z]), s, z])

    def to_compute(x: str) -> str:  # activation entering the operator
        if q:
            return qdq(x)
        if half:
            return node("Cast", [x], to=TensorProto.FLOAT16)
        return x

    def from_compute(x: str, *, after_activation: bool = False) -> str:  # activation leaving the operator
        if q:
            return qdq(x, after_activation=after_activation)
        if half:
            return node("Cast", [x], to=TensorProto.FLOAT)
        return x

    def activation(x: str, *, in_half: bool = False) -> str:
        if kernel.activation == "relu":
            return node("Relu", [x])
        if kernel.activation == "relu6":
            dt = np.float16 if in_half else np.float32
            return node("Clip", [x, const(fresh("lo"), dt(0.0)), const(fresh("hi"), dt(6.0))])
        if kernel.activation == "hardswish":
            return node("HardSwish", [x])
        if kernel.activation == "hardsigmoid":  # torch.nn.Hardsigmoid's constants
            return node("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)
        if kernel.activation == "sigmoid":
            return node("Sigmoid", [x])
        if kernel.activation == "swish":
            return node("Mul", [x, node("Sigmoid", [x])])
        return x

    def weights(shape: tuple[int, ...], fan_in: int) -> tuple[str, str]:
        """Weight and bias inputs of a conv/gemm at the kernel's bits."""
        w = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
        out = shape[0]
        b = (0.01 * rng.standard_normal(out)).astype(np.float32)
        if half:
            return const(fresh("w"), w.astype(np.float16)), const(fresh("b"), b.astype(np.float16))
        if not q:
            return const(fresh("w"), w), const(fresh("b"), b)
        qmax = {8: 127, 4: 7}.get(kernel.bits, 1)
        if kernel.bits in (1, 2):  # sign (and a threshold at 0.7 mean |w| for ternary), scale mean |w|
            flat = np.abs(w).reshape(out, -1)
            w_scale = (flat.mean(1) + 1e-8).astype(np.float32)
            keep = np.ones_like(w) if kernel.bits == 1 else (np.abs(w) > 0.7 * w_scale.reshape((-1,) + (1,) * (w.ndim - 1)))
            wq = np.where(w >= 0, 1.0, -1.0) * keep
        else:
            w_scale = (np.abs(w).reshape(out, -1).max(1) / qmax + 1e-8).astype(np.float32)
            wq = np.clip(np.round(w / w_scale.reshape((-1,) + (1,) * (w.ndim - 1))), -qmax - 1, qmax)
        if kernel.bits != 4:
            w_init = numpy_helper.from_array(wq.astype(np.int8), fresh("wq"))
            zp = const(fresh("wz"), np.zeros(out, dtype=np.int8))
            if kernel.bits in (1, 2):
                low_bits[w_init.name] = kernel.bits
        else:
            w_init = helper.make_tensor(fresh("wq"), TensorProto.INT4, wq.shape, wq.astype(np.int8).flatten().tolist())
            zp_t = helper.make_tensor(fresh("wz"), TensorProto.INT4, (out,), [0] * out)
            inits.append(zp_t)
            zp = zp_t.name
        inits.append(w_init)
        ws = const(fresh("ws"), w_scale)
        w_dq = node("DequantizeLinear", [w_init.name, ws, zp], axis=0)
        b_scale = (w_scale * act_scale).astype(np.float32)
        bq = np.round(b / b_scale).astype(np.int32)
        b_dq = node("DequantizeLinear", [const(fresh("bq"), bq), const(fresh("bs"), b_scale),
                                         const(fresh("bz"), np.zeros(out, dtype=np.int32))], axis=0)
        return w_dq, b_dq

    k = kernel
    inputs = [("x", (1, *k.input_shape))]
    x = "x"
    if k.op == "conv":
        cin = k.input_shape[0]
        w, b = weights((k.out_channels, cin // k.groups, k.kernel_size, k.kernel_size), cin // k.groups * k.kernel_size**2)
        y = node("Conv", [to_compute(x), w, b], kernel_shape=[k.kernel_size] * 2, strides=[k.stride] * 2,
                 pads=[k.pad] * 4, group=k.groups)
        y = activation(from_compute(y)) if half else from_compute(activation(y), after_activation=True)
    elif k.op == "linear":
        f = k.input_shape[0]
        w, b = weights((k.out_channels or f, f), f)
        y = node("Gemm", [to_compute(x), w, b], transB=1)
        y = activation(from_compute(y)) if half else from_compute(activation(y), after_activation=True)
    elif k.op == "add":
        inputs.append(("x2", (1, *k.input_shape)))
        y = node("Add", [to_compute("x"), to_compute("x2")])
        y = activation(from_compute(y)) if half else from_compute(activation(y), after_activation=True)
    elif k.op == "concat":
        c, h, wd = k.input_shape
        c1 = max(c // 2, 1)
        if c1 == c:  # a one-channel concat output cannot come from two inputs
            inputs = [("x", (1, c, h, wd))]
            y = from_compute(node("Concat", [to_compute("x")], axis=1))
        else:
            inputs = [("x", (1, c1, h, wd)), ("x2", (1, c - c1, h, wd))]
            y = from_compute(node("Concat", [to_compute("x"), to_compute("x2")], axis=1))
    elif k.op == "split":
        xc = to_compute(x)
        outs = [fresh("split") for _ in range(k.groups)]
        nodes.append(helper.make_node("Split", [xc], outs, axis=1, num_outputs=k.groups))
        ys = [from_compute(o) for o in outs]
        return _finish(k, nodes, inits, inputs, ys, half, low_bits)
    elif k.op == "channel_shuffle" and q:  # on uint8 channels-last data, as after an int8 layer
        c, h, wd = k.input_shape
        g = k.groups
        inputs = [("x", (1, h, wd, c))]
        s, z = const(fresh("s"), np.float32(act_scale)), const(fresh("z"), np.uint8(128))
        y = node("Reshape", [node("QuantizeLinear", [x, s, z]),
                             const(fresh("shape"), np.array([1, h, wd, g, c // g], dtype=np.int64))])
        y = node("Transpose", [y], perm=[0, 4, 3, 1, 2])
        y = node("Reshape", [y, const(fresh("shape"), np.array([1, c, h, wd], dtype=np.int64))])
        y = node("DequantizeLinear", [y, s, z])
    elif k.op == "channel_shuffle":
        c, h, wd = k.input_shape
        g = k.groups
        s1 = const(fresh("shape"), np.array([1, g, c // g, h, wd], dtype=np.int64))
        s2 = const(fresh("shape"), np.array([1, c, h, wd], dtype=np.int64))
        y = node("Reshape", [to_compute(x), s1])
        y = node("Transpose", [y], perm=[0, 2, 1, 3, 4])
        y = from_compute(node("Reshape", [y, s2]))
    elif k.op == "crelu":
        xc = to_compute(x)
        y = node("Concat", [xc, node("Neg", [xc])], axis=1)
        y = activation(from_compute(y)) if half else from_compute(activation(y), after_activation=True)
    elif k.op == "scale":
        c = k.input_shape[0]
        inputs.append(("s", (1, c, 1, 1)))
        y = node("Mul", [to_compute("x"), to_compute("s")])
        y = activation(from_compute(y)) if half else from_compute(activation(y), after_activation=True)
    elif k.op == "act":
        y = to_compute(x)
        y = activation(from_compute(y)) if half else from_compute(activation(y), after_activation=True)
    elif k.op == "global_avgpool":
        y = from_compute(node("GlobalAveragePool", [to_compute(x)]))
    elif k.op in ("maxpool", "avgpool"):
        op = "MaxPool" if k.op == "maxpool" else "AveragePool"
        y = from_compute(node(op, [to_compute(x)], kernel_shape=[k.kernel_size] * 2, strides=[k.stride] * 2,
                              pads=[k.pad] * 4))
    else:  # pragma: no cover - Kernel validates op
        raise ValueError(f"kernel op={k.op!r} has no graph builder")
    return _finish(k, nodes, inits, inputs, [y], half, low_bits)


def _out_shape(k: Kernel) -> list[int]:
    if k.op == "linear":
        return [1, k.output_shape[0]]
    if k.op == "global_avgpool":
        return [1, k.input_shape[0], 1, 1]
    return [1, *k.output_shape]


def _finish(kernel: Kernel, nodes: list[Any], inits: list[Any], inputs: list[tuple[str, tuple[int, ...]]],
            outputs: list[str], half: bool, low_bits: dict[str, int] | None = None) -> Any:
    import json

    from onnx import TensorProto, helper

    from latency_models._onnx_graph import WEIGHT_BITS_KEY

    graph = helper.make_graph(
        nodes, f"kernel_{kernel.op}",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, _out_shape(kernel)) for o in outputs],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="karumi.latency_models")
    if low_bits:
        entry = model.metadata_props.add()
        entry.key, entry.value = WEIGHT_BITS_KEY, json.dumps(low_bits, sort_keys=True)
    return model
