"""`fbnet`: the FBNet space of HW-NAS-Bench, exactly as `docs/fbnet-space.md` specifies it.

Macro structure: stem (3x3 conv to 16, BN, ReLU), 22 searchable blocks in 7 stages, head (1x1 conv to 1504
or 1984 channels, BN, ReLU), global average pool, fully connected classifier. Each block is one of nine
choices (``k{3,5}_e{1,3,6}`` inverted residuals, ``_g2`` grouped variants with a channel shuffle, ``skip``).

Per-layer table (``layer_names``): ``stem``, ``blocks.0`` ... ``blocks.21``, ``head``, ``classifier``.
A block's prune ratio removes that fraction of its expanded hidden channels (``C_in * E``; the block's
input and output widths stay those of the spec, so residuals and the stage widths are untouched); the
head's ratio removes head channels (and the classifier's matching inputs). ``stem``, ``classifier`` and
``skip`` blocks have nothing to prune. A block's bits apply to all its convolutions; an identity ``skip``
has no weights. With no pruning the network is exactly the spec's.
"""

from __future__ import annotations

import functools
import math
from itertools import chain
from typing import Any, Mapping, Sequence

import numpy as np

from latency_models import Kernel
from spaces._base import (
    Architecture,
    Layer,
    SearchSpace,
    Suggest,
    check_unknown,
)
from spaces._codes import keep_channels_array, pack, unpack
from spaces._plan import (
    ConvBN,
    GlobalPool,
    Linear,
    Seq,
    Shuffle,
    keep_channels,
)
from spaces._registry import register_space

__all__ = ["FBNetSpace", "FBNET_OPS"]

#: Block choices, in the index order of the spec.
FBNET_OPS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
STAGE_BLOCKS = (1, 4, 4, 4, 4, 4, 1)
STAGE_CHANNELS = (16, 24, 32, 64, 112, 184, 352)
STEM_CHANNELS = 16
SETTINGS = {
    "cifar": {"stem_stride": 1, "strides": (1, 1, 2, 2, 1, 2, 1), "head": 1504, "num_classes": 100, "input_size": 32},
    "imagenet": {"stem_stride": 2, "strides": (1, 2, 2, 2, 1, 2, 1), "head": 1984, "num_classes": 1000, "input_size": 224},
}
NUM_LAYERS = sum(STAGE_BLOCKS)
#: The default architecture, ``candidate()`` without ``ops``.
DEFAULT_OPS = ("k3_e6",) * NUM_LAYERS


def parse_op(op: str) -> tuple[int, int, int] | None:
    """(kernel, expansion, groups) of a block choice, ``None`` for ``skip``."""
    if op == "skip":
        return None
    parts = op.split("_")
    return int(parts[0][1:]), int(parts[1][1:]), 2 if len(parts) == 3 else 1


def block_configs(setting: str) -> list[tuple[int, int, int]]:
    """(C_in, C_out, stride) of the 22 blocks."""
    cfg, cin, out = SETTINGS[setting], STEM_CHANNELS, []
    for n, cout, stride in zip(STAGE_BLOCKS, STAGE_CHANNELS, cfg["strides"]):
        for j in range(n):
            out.append((cin, cout, stride if j == 0 else 1))
            cin = cout
    return out


@register_space("fbnet")
class FBNetSpace(SearchSpace):
    """The HW-NAS-Bench FBNet space. Genes: ``ops``, the 22 block choices of :data:`FBNET_OPS` in order.

    Options: ``setting`` (``"cifar"``: stem stride 1, head 1504, defaults 100 classes at 32x32;
    ``"imagenet"``: stem stride 2, head 1984, defaults 1000 classes at 224x224), ``num_classes``,
    ``input_size``, ``in_channels`` and ``channel_multiple`` (pruned hidden widths are multiples of it, and
    of the block's groups).
    """

    def __init__(
        self,
        *,
        setting: str = "cifar",
        num_classes: int | None = None,
        input_size: int | None = None,
        in_channels: int = 3,
        channel_multiple: int = 8,
    ) -> None:
        if setting not in SETTINGS:
            raise ValueError(f"setting={setting!r} is not allowed; allowed: {', '.join(SETTINGS)}")
        cfg = SETTINGS[setting]
        super().__init__(
            num_classes=cfg["num_classes"] if num_classes is None else num_classes,
            input_size=cfg["input_size"] if input_size is None else input_size,
            in_channels=in_channels,
            channel_multiple=channel_multiple,
        )
        self.setting = setting

    @property
    def options(self) -> dict[str, Any]:
        return {**super().options, "setting": self.setting}

    # ----------------------------------------------------------------- genes
    def _architecture(self, genes: Mapping[str, Any]) -> Architecture:
        check_unknown(genes, ("ops",))
        ops = genes.get("ops", DEFAULT_OPS)
        if isinstance(ops, (str, bytes)) or not isinstance(ops, Sequence):
            raise ValueError(f"ops={ops!r} is not allowed; allowed: a list of {NUM_LAYERS} block names")
        if len(ops) != NUM_LAYERS:
            raise ValueError(f"ops has {len(ops)} blocks; allowed: exactly {NUM_LAYERS} ({'+'.join(map(str, STAGE_BLOCKS))})")
        for i, op in enumerate(ops):
            if op not in FBNET_OPS:
                raise ValueError(f"ops[{i}]={op!r} is not allowed; allowed: {', '.join(FBNET_OPS)}")
        genes = {"ops": list(ops)}
        return Architecture(genes, self._layers(genes))

    def _sample_architecture(self, suggest: Suggest) -> dict[str, Any]:
        return {"ops": [suggest.categorical(f"op_{i}", FBNET_OPS) for i in range(NUM_LAYERS)]}

    def _architecture_params(self, genes: Mapping[str, Any], opt_in: frozenset[str]) -> dict[str, Any]:
        return {f"op_{i}": op for i, op in enumerate(genes["ops"])}

    def _layers(self, arch: Mapping[str, Any]) -> tuple[Layer, ...]:
        layers = [Layer("stem", prunable=False)]
        for i, (op, (cin, cout, stride)) in enumerate(zip(arch["ops"], block_configs(self.setting))):
            identity = op == "skip" and cin == cout and stride == 1
            layers.append(Layer(f"blocks.{i}", prunable=op != "skip", quantisable=not identity))
        return (*layers, Layer("head", prunable=True), Layer("classifier", prunable=False))

    # ----------------------------------------------------------------- plan
    def _plan(self, arch: Mapping[str, Any], ratios: Sequence[float], bits: Sequence[int]) -> Seq:
        blocks = [self._block(i, op, r, b) for i, (op, r, b) in enumerate(zip(arch["ops"], ratios[1:-2], bits[1:-2]))]
        return Seq("", (self._stem(bits[0]), Seq("blocks", tuple(blocks)), *self._tail(ratios[-2], bits[-2], bits[-1])))

    def _stem(self, bits: int) -> ConvBN:
        return ConvBN("stem", self.in_channels, STEM_CHANNELS, 3, SETTINGS[self.setting]["stem_stride"], bits=bits)

    def _block(self, i: int, op: str, r: float, b: int) -> Seq:
        """Block ``i`` as ``op`` with prune ratio ``r`` and bits ``b``."""
        parsed = parse_op(op)
        if parsed is None:
            return self._block_of(i, op, 0, b)
        _, e, g = parsed
        cin = _block_configs(self.setting)[i][0]
        return self._block_of(i, op, keep_channels(cin * e, r, math.lcm(self.channel_multiple, g)), b)

    def _block_of(self, i: int, op: str, hidden: int, b: int) -> Seq:
        """Block ``i`` as ``op`` with ``hidden`` expanded channels (ignored for ``skip``) and bits ``b``."""
        cin, cout, stride = _block_configs(self.setting)[i]
        parsed = parse_op(op)
        if parsed is None:
            same = cin == cout and stride == 1
            return Seq(str(i), () if same else (ConvBN("conv", cin, cout, 1, stride, padding=0, bits=b),))
        k, e, g = parsed
        children = [ConvBN("expand", cin, hidden, 1, groups=g, padding=0, bits=b)]
        if g > 1:
            children.append(Shuffle("shuffle", g))
        children += [
            ConvBN("dw", hidden, hidden, k, stride, groups=hidden, padding=math.ceil((k - stride) / 2), bits=b),
            ConvBN("project", hidden, cout, 1, groups=g, activation="none", padding=0, bits=b),
        ]
        return Seq(str(i), tuple(children), residual=cin == cout and stride == 1)

    def _tail(self, r_head: float, b_head: int, b_classifier: int) -> tuple[ConvBN, GlobalPool, Linear]:
        """Head convolution, global pool and classifier."""
        return self._tail_of(keep_channels(SETTINGS[self.setting]["head"], r_head, self.channel_multiple), b_head,
                             b_classifier)

    def _tail_of(self, head_channels: int, b_head: int, b_classifier: int) -> tuple[ConvBN, GlobalPool, Linear]:
        return (ConvBN("head", STAGE_CHANNELS[-1], head_channels, 1, padding=0, bits=b_head), GlobalPool("pool"),
                Linear("classifier", head_channels, self.num_classes, bits=b_classifier))

    # ----------------------------------------------------------------- compiled latency (spaces._compiled)
    def _latency_segments(self, arch: Mapping[str, Any], ratios: Sequence[float], bits: Sequence[int]) -> list[Any]:
        """Stem, the 22 blocks, then head, pool and classifier: each keyed by what decides its kernels."""
        return [("stem", bits[0]), *zip(range(NUM_LAYERS), arch["ops"], ratios[1:-2], bits[1:-2]),
                ("tail", ratios[-2], bits[-2], bits[-1])]

    def _segment_signature(self, key: tuple[Any, ...], state: Any) -> Any:
        """What decides a block's kernels once its ratio is rounded to channels (None: use the key)."""
        if key[0] in ("stem", "tail"):
            return None
        i, op, r, b = key
        parsed = parse_op(op)
        if parsed is None:
            return (i, state, op, b)
        cin = _block_configs(self.setting)[i][0]
        return (i, state, parsed, keep_channels(cin * parsed[1], r, math.lcm(self.channel_multiple, parsed[2])), b)

    def _segment_kernels(self, key: tuple[Any, ...], state: Any) -> tuple[Any, list[Kernel]]:
        shape = self.input_shape if state is None else state
        if key[0] == "stem":
            nodes: tuple[Any, ...] = (self._stem(key[1]),)
        elif key[0] == "tail":
            nodes = self._tail(*key[1:])
        else:
            nodes = (self._block(*key),)
        return Seq("", nodes).kernels(shape)

    # ----------------------------------------------------------------- segment codes (spaces._compiled)
    #: kinds of the coded segments: the stem, a block (``size`` holds its index, ``cin`` its op's index in
    #: FBNET_OPS, ``cout`` its hidden channels), the head convolution, then pooling and the classifier
    _STEM, _BLOCK, _HEAD, _POOL_CLASSIFIER = range(4)

    def _segment_codes(self, arch: Sequence[Mapping[str, Any]], prune_ratios: Sequence[Sequence[float]],
                       bits: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray] | None:
        """One code per block (see :mod:`spaces._codes`), their hidden channels computed for a whole batch
        with numpy as :meth:`_block` computes them one block at a time."""
        n, m, per = len(arch), self.channel_multiple, NUM_LAYERS + 3
        flat = chain.from_iterable
        op = np.fromiter(map(_OP_INDEX.__getitem__, flat([g["ops"] for g in arch])), dtype=np.intp)
        r = np.fromiter(flat(prune_ratios), dtype=np.float64)
        b = np.fromiter(flat(bits), dtype=np.int64)
        if len(op) != n * NUM_LAYERS or len(r) != n * per or len(b) != n * per:
            return None
        op, r, b = op.reshape(n, NUM_LAYERS), r.reshape(n, per), b.reshape(n, per)
        cin = np.array([c for c, _, _ in _block_configs(self.setting)], dtype=np.int64)
        expansion, multiple, skip = _op_tables(m)
        hidden = keep_channels_array(cin * expansion[op], r[:, 1:-2], multiple[op])
        hidden[skip[op]] = 0
        head = keep_channels_array(np.full(n, SETTINGS[self.setting]["head"]), r[:, -2], m)
        columns = [
            pack(kind=self._STEM, bits=b[:, 0]),
            pack(kind=self._BLOCK, size=np.arange(NUM_LAYERS), cin=op, cout=hidden, bits=b[:, 1:-2]),
            pack(kind=self._HEAD, cout=head, bits=b[:, -2]),
            pack(kind=self._POOL_CLASSIFIER, cin=head, cout=self.num_classes, bits=b[:, -1]),
        ]
        if any(c is None for c in columns):
            return None
        codes = np.concatenate([c.reshape(n, -1) for c in columns], axis=1)  # type: ignore[union-attr]
        return codes.reshape(-1), np.full(n, codes.shape[1], dtype=np.intp)

    def _code_kernels(self, code: int) -> list[Kernel]:
        """The kernels of one segment code of :meth:`_segment_codes`."""
        f = unpack(code)
        kind, b = f["kind"], f["bits"]
        shapes = self.__dict__.get("_block_shapes")
        if shapes is None:  # each block's input shape: fixed by the setting, whatever the ops
            shape, shapes = self._stem(32).kernels(self.input_shape)[0], []
            for i in range(NUM_LAYERS):
                shapes.append(shape)
                shape = self._block_of(i, "k3_e1", _block_configs(self.setting)[i][0], 32).kernels(shape)[0]
            shapes = self.__dict__["_block_shapes"] = (*shapes, shape)
        if kind == self._STEM:
            return self._stem(b).kernels(self.input_shape)[1]
        if kind == self._BLOCK:
            i = f["size"]
            return self._block_of(i, FBNET_OPS[f["cin"]], f["cout"], b).kernels(shapes[i])[1]
        head, pool, classifier = self._tail_of(f["cout"] if kind == self._HEAD else f["cin"], b, b)
        if kind == self._HEAD:
            return head.kernels(shapes[-1])[1]
        out, kernels = pool.kernels((f["cin"], *shapes[-1][1:]))
        return kernels + classifier.kernels(out)[1]


_OP_INDEX = {op: i for i, op in enumerate(FBNET_OPS)}


@functools.cache
def _op_tables(channel_multiple: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per op of FBNET_OPS: expansion, the multiple its hidden channels round to, whether it is ``skip``."""
    parsed = [parse_op(op) or (1, 1, 1) for op in FBNET_OPS]
    return (np.array([e for _, e, _ in parsed], dtype=np.int64),
            np.array([math.lcm(channel_multiple, g) for _, _, g in parsed], dtype=np.int64),
            np.array([op == "skip" for op in FBNET_OPS]))


@functools.cache
def _block_configs(setting: str) -> tuple[tuple[int, int, int], ...]:
    return tuple(block_configs(setting))
