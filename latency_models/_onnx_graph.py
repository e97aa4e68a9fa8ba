"""Read the runtime kernels of an ONNX CNN: the bridge from any exported model to the latency predictor.

:func:`kernels_from_onnx` walks the graph in node order and maps operator patterns to
:class:`~latency_models.Kernel` values:

- ``Conv`` (with a following ``BatchNormalization`` folded and a following ``Relu`` / ``Clip(0, 6)`` fused
  as the activation) -> ``conv``; ``QLinearConv`` -> ``conv`` at 8 bits;
- ``Gemm``, or ``MatMul`` with its bias ``Add``, on a (1, features) input -> ``linear``;
- ``Add`` of two equal feature maps (+ ``Relu``) -> ``add``; ``Concat`` of feature maps on channels -> ``concat``;
- ``Split`` into equal channel parts, or ``Slice`` nodes that partition the channels of one tensor -> ``split``;
- ``Reshape`` to 5-D -> ``Transpose(0, 2, 1, 3, 4)`` -> ``Reshape`` back -> ``channel_shuffle`` (at 8 bits when it
  shuffles what int8 convolutions wrote: ONNX Runtime runs it on uint8 channels-last);
- ``GlobalAveragePool`` or ``ReduceMean`` over H and W -> ``global_avgpool``; ``MaxPool`` / ``AveragePool``
  (a ``MaxPool`` after a ``DequantizeLinear``, on an integer tensor or before ``QuantizeLinear`` only -> at 8 bits:
  ONNX Runtime runs it on uint8);
- ``Neg`` of a feature map concatenated after it on channels (``Concat(x, Neg(x))``), with the following
  ``Relu`` / ``Clip(0, 6)`` -> ``crelu``;
- activations after a conv, linear, add or scale are fused into it: ``Relu``, ``Clip(0, 6)``, ``HardSwish``,
  ``HardSigmoid``, ``Sigmoid``, and swish (SiLU), ``Mul(x, Sigmoid(x))``; one that follows anything else
  (and is the only reader of its input) -> ``act``;
- ``Mul`` of a feature map by a computed (1, C, 1, 1) tensor (squeeze-and-excitation) -> ``scale``.

Plumbing (``Flatten``, ``Reshape``, ``Identity``, ``Shape``, ``Constant``, ``Gather``, ``Cast``, ...) and
every node that only computes integer shape values is ignored, as are activation ``QuantizeLinear`` /
``DequantizeLinear`` pairs. Weight bits come from how a Conv/Gemm/MatMul weight is stored: an INT8/UINT8
tensor behind a ``DequantizeLinear`` -> 8, INT4/UINT4 -> 4, a float16 tensor (behind a ``Cast`` or used
directly) -> 16, float32 -> 32. Weightless kernels are reported at 32 bits (but for ``MaxPool`` and the shuffle,
above). Binary and ternary weights are stored as INT8 (ONNX Runtime runs them as int8); the model's metadata entry
:data:`WEIGHT_BITS_KEY` (a JSON object: initializer name -> 1 or 2) says which, as
``spaces.compress.export_onnx_quantized`` writes it.

Shapes come from ONNX shape inference, after folding the integer shape arithmetic that exporters emit
(``Shape`` -> ``Gather`` -> ``Div`` ... -> ``Slice``) into constants. No torch here.

Kernels come in the graph's node order; a tool that reorders independent branches (ONNX Runtime's
``quantize_static`` does) changes the order, not the kernels. ONNX Runtime's QDQ quantiser also drops a
ReLU that the following ``QuantizeLinear`` range already clips, so such convolutions read with activation
``none``. Of the QOperator format only ``QLinearConv`` is mapped; other ``QLinear*`` ops are reported.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from latency_models._kernel import QLINEAR_BITS, Kernel

if TYPE_CHECKING:
    import onnx

__all__ = ["WEIGHT_BITS_KEY", "kernels_from_onnx"]

#: Metadata key of a model's INT8 weight initializers that hold binary (1) or ternary (2) weights.
WEIGHT_BITS_KEY = "karumi.weight_bits"

logger = logging.getLogger(__name__)

#: Operators that move or re-describe data without a kernel of their own.
PLUMBING = frozenset({
    "Flatten", "Reshape", "Identity", "Shape", "Constant", "Gather", "Unsqueeze", "Squeeze", "Cast",
    "QuantizeLinear", "DequantizeLinear", "Dropout",
})
#: Operators whose integer results are folded to constants before shape inference.
_FOLDABLE = frozenset({
    "Constant", "Shape", "Gather", "Add", "Sub", "Mul", "Div", "Mod", "Unsqueeze", "Squeeze", "Concat", "Cast",
    "Slice", "Reshape", "Identity",
})
_MAX_FOLD_SIZE = 64
#: Operators that, with integer outputs only, are shape arithmetic (ignored when they could not be folded).
_SHAPE_OPS = _FOLDABLE | {"Equal", "Where", "Range", "ConstantOfShape", "Expand", "Less", "Greater", "Max", "Min",
                          "Not", "ReduceProd", "Size"}


# --------------------------------------------------------------------------------------------- loading
def _load(model: "str | os.PathLike[str] | onnx.ModelProto") -> "onnx.ModelProto":
    import onnx

    if isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
        return proto
    if isinstance(model, (str, os.PathLike)):
        if not os.path.isfile(model):
            raise ValueError(f"model={os.fspath(model)!r} is not a file; allowed: a path to an .onnx file or an onnx.ModelProto")
        return onnx.load(os.fspath(model))
    raise ValueError(f"model={model!r} is not allowed; allowed: a path to an .onnx file or an onnx.ModelProto")


def _fix_batch(proto: "onnx.ModelProto") -> None:
    """Set a dynamic batch dimension to 1; any other dynamic input dimension is an error."""
    initializers = {t.name for t in proto.graph.initializer}
    for value in proto.graph.input:
        if value.name in initializers or not value.type.HasField("tensor_type"):
            continue
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            if axis == 0:
                dim.Clear()
                dim.dim_value = 1
            else:
                raise ValueError(
                    f"model input {value.name!r} has a dynamic dimension {axis} ({dim.dim_param or '?'}); "
                    "allowed: a model exported with a fixed input shape (a dynamic batch is fine)"
                )


# --------------------------------------------------------------------------------------------- constants
def _attr(node: "onnx.NodeProto", name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _constant_node_value(node: "onnx.NodeProto") -> np.ndarray | None:
    from onnx import numpy_helper

    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name == "value_float":
            return np.array(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), dtype=np.float32)
        if a.name == "value_int":
            return np.array(a.i, dtype=np.int64)
        if a.name == "value_ints":
            return np.array(list(a.ints), dtype=np.int64)
    return None


def _evaluate(node: "onnx.NodeProto", inputs: list[np.ndarray | None], shapes: dict[str, tuple[int, ...]]) -> np.ndarray | None:
    """The value of a shape-arithmetic node, or ``None`` when it cannot (or should not) be computed."""
    import onnx

    op = node.op_type
    if op == "Constant":
        return _constant_node_value(node)
    if op == "Shape":
        shape = shapes.get(node.input[0])
        if shape is None:
            return None
        start, end = _attr(node, "start", 0), _attr(node, "end", None)
        return np.array(shape[start:end], dtype=np.int64)
    if not inputs or any(v is None for name, v in zip(node.input, inputs) if name):
        return None
    x = inputs[0]
    if op == "Identity":
        return x
    if op == "Gather":
        return np.take(x, inputs[1], axis=_attr(node, "axis", 0))
    if op in ("Add", "Sub", "Mul", "Mod"):
        f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Mod": np.mod}[op]
        return f(x, inputs[1])
    if op == "Div":
        y = inputs[1]
        if np.issubdtype(x.dtype, np.integer):
            return np.trunc(x / y).astype(x.dtype)
        return x / y
    if op in ("Unsqueeze", "Squeeze"):
        axes = inputs[1] if len(inputs) > 1 and inputs[1] is not None else _attr(node, "axes")
        if op == "Unsqueeze":
            out = x
            for axis in sorted(int(a) % (x.ndim + len(axes)) for a in axes):
                out = np.expand_dims(out, axis)
            return out
        return np.squeeze(x, axis=None if axes is None else tuple(int(a) for a in axes))
    if op == "Concat":
        return np.concatenate([np.atleast_1d(v) for v in inputs], axis=_attr(node, "axis", 0))
    if op == "Cast":
        return x.astype(onnx.helper.tensor_dtype_to_np_dtype(_attr(node, "to")))
    if op == "Slice":
        starts, ends = inputs[1], inputs[2]
        axes = inputs[3] if len(inputs) > 3 and node.input[3] else np.arange(len(starts))
        steps = inputs[4] if len(inputs) > 4 and node.input[4] else np.ones(len(starts), dtype=np.int64)
        index = [slice(None)] * x.ndim
        for s, e, a, st in zip(starts, ends, axes, steps):
            index[int(a)] = slice(int(s), int(e), int(st))
        return x[tuple(index)]
    if op == "Reshape":
        target = [x.shape[i] if d == 0 else int(d) for i, d in enumerate(inputs[1])]
        return x.reshape(target)
    return None


class _Graph:
    """A loaded model with its integer shape arithmetic folded and shapes inferred."""

    def __init__(self, proto: "onnx.ModelProto") -> None:
        from onnx import numpy_helper

        self.proto = proto
        self._infer()
        for _ in range(6):
            if not self._fold():
                break
            self._infer()
        self.nodes = list(proto.graph.node)
        self.initializers = {t.name: t for t in proto.graph.initializer}
        self.constants: dict[str, np.ndarray] = {}
        for node in self.nodes:
            if node.op_type == "Constant":
                value = _constant_node_value(node)
                if value is not None:
                    self.constants[node.output[0]] = value
        self._numpy_helper = numpy_helper
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        for i, node in enumerate(self.nodes):
            for name in node.output:
                self.producer[name] = i
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(i)
        self.outputs = {v.name for v in proto.graph.output}
        self.low_bits: dict[str, int] = {}
        for prop in proto.metadata_props:
            if prop.key == WEIGHT_BITS_KEY:
                import json

                try:
                    self.low_bits = {str(k): int(v) for k, v in json.loads(prop.value).items() if int(v) in (1, 2)}
                except (ValueError, AttributeError):
                    logger.warning("ignoring a malformed %s metadata entry", WEIGHT_BITS_KEY)

    def _infer(self) -> None:
        import onnx

        inferred = onnx.shape_inference.infer_shapes(self.proto, data_prop=True)
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, int] = {}
        for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
            t = value.type.tensor_type
            if not value.type.HasField("tensor_type"):
                continue
            if t.elem_type:
                self.dtypes[value.name] = t.elem_type
            if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
                self.shapes[value.name] = tuple(int(d.dim_value) for d in t.shape.dim)
        for init in self.proto.graph.initializer:
            self.shapes[init.name] = tuple(int(d) for d in init.dims)
            self.dtypes[init.name] = init.data_type

    def _fold(self) -> bool:
        """Replace integer shape-arithmetic nodes by initializers; True when something was folded."""
        from onnx import numpy_helper

        graph = self.proto.graph
        known: dict[str, np.ndarray] = {}
        for init in graph.initializer:
            if init.data_type in (6, 7) and int(np.prod(init.dims)) <= _MAX_FOLD_SIZE:  # INT32, INT64
                known[init.name] = numpy_helper.to_array(init)
        outputs = {v.name for v in graph.output}
        keep, folded = [], []
        for node in graph.node:
            value = None
            if node.op_type in _FOLDABLE and len(node.output) == 1 and node.output[0] not in outputs:
                value = _evaluate(node, [known.get(name) for name in node.input], self.shapes)
            if (
                value is not None
                and np.issubdtype(np.asarray(value).dtype, np.integer)
                and np.asarray(value).size <= _MAX_FOLD_SIZE
            ):
                value = np.asarray(value)
                known[node.output[0]] = value
                folded.append(numpy_helper.from_array(value, node.output[0]))
            else:
                keep.append(node)
        if not folded:
            return False
        del graph.node[:]
        graph.node.extend(keep)
        graph.initializer.extend(folded)
        return True

    # ----------------------------------------------------------------- queries
    def const(self, name: str) -> np.ndarray | None:
        if name in self.constants:
            return self.constants[name]
        if name in self.initializers:
            return self._numpy_helper.to_array(self.initializers[name])
        if name in self.producer and self.nodes[self.producer[name]].op_type == "Identity":
            return self.const(self.nodes[self.producer[name]].input[0])
        return None

    def is_integer(self, name: str) -> bool:
        return self.dtypes.get(name) in (2, 3, 4, 5, 6, 7, 12, 13)  # (U)INT8/16/32/64

    def next_node(self, tensor: str) -> int | None:
        """The single consumer of ``tensor``, looking through activation QuantizeLinear/DequantizeLinear pairs
        and the ``Cast`` nodes around float16 layers."""
        while True:
            users = self.consumers.get(tensor, [])
            if tensor in self.outputs or len(users) != 1:
                return None
            node = self.nodes[users[0]]
            if node.op_type == "Cast":
                tensor = node.output[0]
                continue
            if node.op_type == "QuantizeLinear":
                after = self.consumers.get(node.output[0], [])
                if len(after) == 1 and self.nodes[after[0]].op_type == "DequantizeLinear" and node.output[0] not in self.outputs:
                    tensor = self.nodes[after[0]].output[0]
                    continue
                return None
            return users[0]

    def weight_bits(self, name: str) -> int:
        """Bits a weight is stored at, following Identity/Cast/DequantizeLinear/reshapes back to its source."""
        for _ in range(16):
            dtype = self.dtypes.get(name)
            if dtype in (3, 2, 17, 18, 19, 20):  # INT8, UINT8, FLOAT8 variants
                return self.low_bits.get(name, 8)
            if dtype in (21, 22):  # UINT4, INT4
                return 4
            if dtype in (10, 16, 4, 5):  # FLOAT16, BFLOAT16, UINT16, INT16
                return 16
            producer = self.producer.get(name)
            if producer is None:
                return 32
            node = self.nodes[producer]
            if node.op_type not in ("DequantizeLinear", "QuantizeLinear", "Identity", "Cast", "Reshape", "Transpose",
                                    "Squeeze", "Unsqueeze", "Flatten"):
                return 32
            name = node.input[0]
        return 32


# --------------------------------------------------------------------------------------------- the walk
def _pad(node: "onnx.NodeProto", kernel_size: int, stride: int, size: int) -> int:
    auto = _attr(node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto == "VALID":
        return 0
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        total = max((-(-size // stride) - 1) * stride + kernel_size - size, 0)
        return (total + 1) // 2
    pads = list(_attr(node, "pads", [0, 0, 0, 0]))
    if len(set(pads)) > 1:
        logger.debug("node %s has asymmetric pads %s; using the largest", node.name, pads)
    return max(pads) if pads else 0


class _Reader:
    def __init__(self, graph: _Graph) -> None:
        self.g = graph
        self.kernels: list[Kernel] = []
        self.unknown: set[str] = set()
        self.done: set[int] = set()

    def run(self) -> tuple[list[Kernel], list[str]]:
        handlers: dict[str, Callable[[int, Any], bool]] = {
            "Conv": self.conv, "QLinearConv": self.conv, "Gemm": self.gemm, "MatMul": self.matmul,
            "Add": self.add, "Concat": self.concat, "Split": self.split, "Slice": self.slice,
            "Reshape": self.reshape, "GlobalAveragePool": self.global_pool, "ReduceMean": self.reduce_mean,
            "MaxPool": self.pool, "AveragePool": self.pool, "Neg": self.neg, "Mul": self.mul,
            "Relu": self.act, "Clip": self.act, "HardSwish": self.act, "HardSigmoid": self.act, "Sigmoid": self.act,
        }
        for i, node in enumerate(self.g.nodes):
            if i in self.done:
                continue
            self.done.add(i)
            if node.op_type in _SHAPE_OPS and all(self.g.is_integer(o) for o in node.output if o):
                continue  # shape arithmetic that could not be folded
            handler = handlers.get(node.op_type)
            if handler is not None:
                if not handler(i, node):
                    self.unknown.add(node.op_type)
            elif node.op_type not in PLUMBING:
                self.unknown.add(node.op_type)
        return self.kernels, sorted(self.unknown)

    # ----------------------------------------------------------------- helpers
    def shape(self, name: str) -> tuple[int, ...] | None:
        return self.g.shapes.get(name)

    def swish(self, tensor: str) -> int | None:
        """The ``Mul`` of ``Mul(tensor, Sigmoid(tensor))`` when those two nodes are the only readers of
        ``tensor`` (or of the float32 tensor a following ``Cast`` makes of it) and not consumed yet (consumed
        here with the Sigmoid), else None."""
        for _ in range(2):
            after = self.g.consumers.get(tensor, [])
            if len(after) != 1 or self.g.nodes[after[0]].op_type != "Cast" or tensor in self.g.outputs:
                break
            tensor = self.g.nodes[after[0]].output[0]
        users = [j for j in self.g.consumers.get(tensor, []) if j not in self.done]
        if tensor in self.g.outputs or len(users) != 2 or len(self.g.consumers.get(tensor, [])) != 2:
            return None
        sig = next((j for j in users if self.g.nodes[j].op_type == "Sigmoid"), None)
        mul = next((j for j in users if self.g.nodes[j].op_type == "Mul"), None)
        if sig is None or mul is None or sorted(self.g.nodes[mul].input) != sorted([tensor, self.g.nodes[sig].output[0]]):
            return None
        if self.g.consumers.get(self.g.nodes[sig].output[0], []) != [mul]:
            return None
        self.done.update((sig, mul))
        return mul

    def fuse_activation(self, tensor: str) -> str:
        """Consume the activation that is the only reader of ``tensor`` (Relu, Clip(0, 6), HardSwish,
        HardSigmoid, Sigmoid, or a swish ``Mul(tensor, Sigmoid(tensor))``); return its name, or ``"none"``."""
        if self.swish(tensor) is not None:
            return "swish"
        nxt = self.g.next_node(tensor)
        if nxt is None or nxt in self.done:
            return "none"
        node = self.g.nodes[nxt]
        simple = {"Relu": "relu", "HardSwish": "hardswish", "HardSigmoid": "hardsigmoid", "Sigmoid": "sigmoid"}
        if node.op_type in simple:
            self.done.add(nxt)
            return simple[node.op_type]
        if node.op_type == "Clip":
            low = _attr(node, "min")
            high = _attr(node, "max")
            if len(node.input) > 1 and node.input[1]:
                value = self.g.const(node.input[1])
                low = None if value is None else float(value)
            if len(node.input) > 2 and node.input[2]:
                value = self.g.const(node.input[2])
                high = None if value is None else float(value)
            if low == 0.0 and high == 6.0:
                self.done.add(nxt)
                return "relu6"
        return "none"

    # ----------------------------------------------------------------- handlers (True when mapped)
    def conv(self, i: int, node: Any) -> bool:
        quantised = node.op_type == "QLinearConv"
        x, w = node.input[0], node.input[3 if quantised else 1]
        xs, ws = self.shape(x), self.shape(w)
        if xs is None or ws is None or len(xs) != 4 or len(ws) != 4:
            return False
        kh, kw = ws[2], ws[3]
        strides = list(_attr(node, "strides", [1, 1]))
        dilations = list(_attr(node, "dilations", [1, 1]))
        if kh != kw or len(set(strides)) != 1 or set(dilations) != {1}:
            return False
        out = node.output[0]
        nxt = self.g.next_node(out)
        if not quantised and nxt is not None and nxt not in self.done and self.g.nodes[nxt].op_type == "BatchNormalization":
            self.done.add(nxt)
            out = self.g.nodes[nxt].output[0]
        activation = "none" if quantised else self.fuse_activation(out)
        pad = _pad(node, kh, strides[0], xs[2])
        self.kernels.append(Kernel(
            "conv", xs[1:], out_channels=ws[0], kernel_size=kh, stride=strides[0], groups=_attr(node, "group", 1),
            bits=8 if quantised else self.g.weight_bits(w), activation=activation,
            padding=pad,
        ))
        return True

    def _linear(self, x: str, w: str, out: str, features_out: int) -> bool:
        xs = self.shape(x)
        if xs is None or len(xs) != 2 or xs[0] != 1:
            return False
        activation = self.fuse_activation(out)
        self.kernels.append(Kernel("linear", (xs[1],), out_channels=features_out, bits=self.g.weight_bits(w),
                                   activation=activation))
        return True

    def gemm(self, i: int, node: Any) -> bool:
        if _attr(node, "transA", 0):
            return False
        ws = self.shape(node.input[1])
        if ws is None or len(ws) != 2:
            return False
        n = ws[0] if _attr(node, "transB", 0) else ws[1]
        return self._linear(node.input[0], node.input[1], node.output[0], n)

    def matmul(self, i: int, node: Any) -> bool:
        ws = self.shape(node.input[1])
        if ws is None or len(ws) != 2:
            return False
        out = node.output[0]
        nxt = self.g.next_node(out)
        if nxt is not None and nxt not in self.done and self.g.nodes[nxt].op_type == "Add":
            add = self.g.nodes[nxt]
            other = add.input[1] if add.input[0] == out else add.input[0]
            if self.g.const(other) is not None or self.g.producer.get(other) is not None and \
                    self.g.nodes[self.g.producer[other]].op_type == "DequantizeLinear":
                self.done.add(nxt)
                out = add.output[0]
        return self._linear(node.input[0], node.input[1], out, ws[1])

    def add(self, i: int, node: Any) -> bool:
        a, b = self.shape(node.input[0]), self.shape(node.input[1])
        if a is None or a != b or len(a) != 4 or any(self.g.const(n) is not None for n in node.input[:2]):
            return False
        self.kernels.append(Kernel("add", a[1:], activation=self.fuse_activation(node.output[0])))
        return True

    def mul(self, i: int, node: Any) -> bool:
        """``Mul`` of a (1, C, H, W) feature map by a computed (1, C, 1, 1) one: a squeeze-and-excitation scale."""
        if len(node.input) != 2 or any(self.g.const(n) is not None for n in node.input):
            return False
        a, b = self.shape(node.input[0]), self.shape(node.input[1])
        if a is None or b is None or len(a) != 4 or len(b) != 4:
            return False
        x, s = (a, b) if b[2:] == (1, 1) and a[2:] != (1, 1) else (b, a)
        if s != (1, x[1], 1, 1) or x[0] != 1:
            return False
        self.kernels.append(Kernel("scale", x[1:], activation=self.fuse_activation(node.output[0])))
        return True

    def act(self, i: int, node: Any) -> bool:
        """An activation of its own on a (1, C, H, W) tensor (one no conv, linear or add consumed)."""
        xs = self.shape(node.input[0])
        if xs is None or len(xs) != 4:
            return False
        self.done.discard(i)  # fuse_activation consumes it (and a swish's Mul) when it is one
        tensor = node.input[0]
        activation = self.fuse_activation(tensor)
        if activation == "none" or i not in self.done:
            self.done.add(i)
            return False
        self.kernels.append(Kernel("act", xs[1:], activation=activation))
        return True

    def concat(self, i: int, node: Any) -> bool:
        out = self.shape(node.output[0])
        if out is None or len(out) != 4 or _attr(node, "axis") % 4 != 1:
            return False
        self.kernels.append(Kernel("concat", out[1:]))
        return True

    def split(self, i: int, node: Any) -> bool:
        xs = self.shape(node.input[0])
        parts = [self.shape(o) for o in node.output]
        if xs is None or len(xs) != 4 or _attr(node, "axis", 0) % 4 != 1 or any(p is None for p in parts):
            return False
        channels = {p[1] for p in parts}
        if len(channels) != 1 or len(parts) < 2 or xs[1] % len(parts):
            return False
        self.kernels.append(Kernel("split", xs[1:], groups=len(parts)))
        return True

    def slice(self, i: int, node: Any) -> bool:
        """Slices that together partition the channels of one feature map into equal parts."""
        x = node.input[0]
        xs = self.shape(x)
        if xs is None or len(xs) != 4:
            return False
        group = [j for j in self.g.consumers.get(x, []) if self.g.nodes[j].op_type == "Slice" and (j == i or j not in self.done)]
        shapes = [self.shape(self.g.nodes[j].output[0]) for j in group]
        if any(s is None or len(s) != 4 or s[0] != xs[0] or s[2:] != xs[2:] for s in shapes):
            return False
        channels = [s[1] for s in shapes]
        if len(group) < 2 or len(set(channels)) != 1 or sum(channels) != xs[1]:
            return False
        self.done.update(group)
        self.kernels.append(Kernel("split", xs[1:], groups=len(group)))
        return True

    def reshape(self, i: int, node: Any) -> bool:
        """Reshape (N, C, H, W) -> (N, g, C/g, H, W), Transpose(0, 2, 1, 3, 4), Reshape back: a shuffle."""
        xs, mid = self.shape(node.input[0]), self.shape(node.output[0])
        t = self.g.next_node(node.output[0])
        if xs is None or mid is None or len(xs) != 4 or len(mid) != 5 or t is None:
            return True  # plain plumbing
        transpose = self.g.nodes[t]
        if transpose.op_type != "Transpose" or list(_attr(transpose, "perm", [])) != [0, 2, 1, 3, 4]:
            return True
        r = self.g.next_node(transpose.output[0])
        if r is None or self.g.nodes[r].op_type != "Reshape" or self.shape(self.g.nodes[r].output[0]) != xs:
            return True
        self.done.update((t, r))
        bits = 8 if self._qlinear_output(node.input[0]) else 32
        self.kernels.append(Kernel("channel_shuffle", xs[1:], groups=mid[1], bits=bits))
        return True

    def _qlinear_output(self, tensor: str, depth: int = 0) -> bool:
        """Whether ``tensor`` is what an int8 convolution wrote (``QLinearConv``, or a ``Conv`` on int8
        weights behind the ``DequantizeLinear`` of its quantised output, through a fused ReLU / ReLU6), or a
        quantised concatenation of such tensors: ONNX Runtime holds it in uint8 channels-last, and a channel
        shuffle of it runs as one strided uint8 transpose (read at 8 bits, see ``spaces._plan.shuffle_bits``)."""
        producer = self.g.producer.get(tensor)
        if producer is None or depth > 8:
            return False
        node = self.g.nodes[producer]
        if node.op_type == "QLinearConv":
            return True
        if node.op_type != "DequantizeLinear":  # (a concatenation left in float runs in float)
            return False
        q = self.g.producer.get(node.input[0])
        if q is not None and self.g.nodes[q].op_type == "QLinearConv":  # the QOperator format
            return True
        if q is None or self.g.nodes[q].op_type != "QuantizeLinear":
            return False
        x = self.g.nodes[q].input[0]
        for _ in range(2):  # the activation the quantiser's range clips
            p = self.g.producer.get(x)
            if p is None or self.g.nodes[p].op_type not in ("Relu", "Clip"):
                break
            x = self.g.nodes[p].input[0]
        p = self.g.producer.get(x)
        if p is None:
            return False
        conv = self.g.nodes[p]
        if conv.op_type == "Concat":  # a quantised concatenation (of quantised inputs)
            return all(self._qlinear_output(i, depth + 1) for i in conv.input)
        return conv.op_type == "Conv" and self.g.weight_bits(conv.input[1]) in QLINEAR_BITS

    def neg(self, i: int, node: Any) -> bool:
        """``Concat(x, Neg(x))`` on channels, then an activation: a CReLU."""
        x = node.input[0]
        xs = self.shape(x)
        cat = self.g.next_node(node.output[0])
        if xs is None or len(xs) != 4 or cat is None or cat in self.done:
            return False
        c = self.g.nodes[cat]
        sources = [self._source(name) for name in c.input]
        if c.op_type != "Concat" or _attr(c, "axis", 0) % 4 != 1 or sources != [self._source(x), node.output[0]]:
            return False
        self.done.add(cat)
        self.kernels.append(Kernel("crelu", xs[1:], activation=self.fuse_activation(c.output[0])))
        return True

    def _source(self, name: str) -> str:
        """``name``, or the tensor before the activation QuantizeLinear/DequantizeLinear pair producing it."""
        for _ in range(2):
            producer = self.g.producer.get(name)
            if producer is None or self.g.nodes[producer].op_type != "DequantizeLinear":
                return name
            q = self.g.producer.get(self.g.nodes[producer].input[0])
            if q is None or self.g.nodes[q].op_type != "QuantizeLinear":
                return name
            name = self.g.nodes[q].input[0]
        return name

    def global_pool(self, i: int, node: Any) -> bool:
        xs = self.shape(node.input[0])
        if xs is None or len(xs) != 4:
            return False
        self.kernels.append(Kernel("global_avgpool", xs[1:]))
        return True

    def reduce_mean(self, i: int, node: Any) -> bool:
        xs = self.shape(node.input[0])
        axes = _attr(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            value = self.g.const(node.input[1])
            axes = None if value is None else [int(a) for a in np.atleast_1d(value)]
        if xs is None or len(xs) != 4 or axes is None or sorted(a % 4 for a in axes) != [2, 3]:
            return False
        self.kernels.append(Kernel("global_avgpool", xs[1:]))
        return True

    def pool(self, i: int, node: Any) -> bool:
        xs = self.shape(node.input[0])
        kernel = list(_attr(node, "kernel_shape", []))
        strides = list(_attr(node, "strides", [1, 1]))
        if xs is None or len(xs) != 4 or len(kernel) != 2 or kernel[0] != kernel[1] or len(set(strides)) != 1:
            return False
        k = kernel[0]
        pad = _pad(node, k, strides[0], xs[2])
        op = "maxpool" if node.op_type == "MaxPool" else "avgpool"
        bits = 8 if op == "maxpool" and self._quantised_around(node) else 32
        self.kernels.append(Kernel(op, xs[1:], kernel_size=k, stride=strides[0], padding=pad, bits=bits))
        return True

    def _quantised_around(self, node: Any) -> bool:
        """Whether ``node`` reads a dequantised (or integer) tensor, or only quantises what it writes: ONNX
        Runtime then moves the quantisation across a max pool and runs it on uint8 (read at 8 bits)."""
        x = node.input[0]
        producer = self.g.producer.get(x)
        if self.g.is_integer(x) or (producer is not None and self.g.nodes[producer].op_type == "DequantizeLinear"):
            return True
        users = self.g.consumers.get(node.output[0], [])
        return bool(users) and node.output[0] not in self.g.outputs and all(
            self.g.nodes[u].op_type == "QuantizeLinear" for u in users)


def kernels_from_onnx(model: "str | os.PathLike[str] | onnx.ModelProto") -> tuple[list[Kernel], list[str]]:
    """The kernels an ONNX model executes, in graph order, and the sorted op types that could not be mapped.

    Args:
        model: path of an ``.onnx`` file or an ``onnx.ModelProto`` (not modified). Inputs need a fixed
            shape except for the batch dimension, which is read at 1.

    Returns:
        ``(kernels, unknown)``: the :class:`~latency_models.Kernel` list (see the module docstring for the
        mapping), and the sorted ONNX op types met that map to no kernel and are not plumbing (empty when
        every operator is understood). A ``Clip`` other than (0, 6), an activation whose input has other
        readers, a ``Transpose`` outside a channel shuffle or a ``Slice`` that does not partition channels are
        reported this way.

    Raises:
        ValueError: ``model`` is not a file or a ``ModelProto``, or an input has a dynamic non-batch dimension.
    """
    proto = _load(model)
    _fix_batch(proto)
    return _Reader(_Graph(proto)).run()
