"""`mobilenet`: MobileNetV2-like students made of inverted residual blocks.

Macro structure (MobileNetV2): stem 3x3 conv to ``32*width`` channels, 7 stages of inverted residuals
(widths ``16, 24, 32, 64, 96, 160, 320`` times ``width``, first-block strides ``1, 2, 2, 2, 1, 2, 1``),
head 1x1 conv to ``1280*max(1, width)`` channels, global average pool, classifier. Activations are ReLU6.
A block is: 1x1 expansion conv (absent when the expansion is 1), KxK depthwise conv (stride on the first
block of a stage), 1x1 projection (no activation), residual add when stride 1 and widths match.

Genes: ``width`` (multiplier), ``depths`` (blocks per stage), ``expansions`` and ``kernel_sizes`` (one per
block, nested per stage), and the opt-in ``crelu`` (0-3: CReLU, i.e. transferred filters, on the first N
dense convolutions with ReLU6 in graph order, the head excluded: the stem, then expansion convolutions;
drawn by ``sample`` only with ``genes=("crelu",)``; 0 is left out of the genes). The default
(``candidate()``) is MobileNetV2 1.0.

Per-layer table: ``stem``, ``stages.{s}.{j}``, ``head``, ``classifier``. A prune ratio removes that
fraction of a layer's hidden and output channels, rounded to ``channel_multiple``: the stem's and head's
output channels; a block's expanded hidden channels; and, for the first block of a stage (the only one
without a residual from the stage's own width), the stage's output width, which every later block of the
stage inherits so the residual adds stay consistent. A later block with expansion 1 has nothing to prune.
"""

from __future__ import annotations

from itertools import chain
from typing import Any, Mapping, Sequence

import numpy as np

from latency_models import Kernel
from spaces._base import (
    Architecture,
    Layer,
    StudentSpace,
    Suggest,
    stage_params,
    check_choice,
    check_depths,
    check_unknown,
    per_stage,
    sample_stages,
)
from spaces._codes import keep_channels_array, pack, unpack
from spaces._plan import (
    ConvBN,
    crelu_walk,
    with_crelu,
    GlobalPool,
    Linear,
    Seq,
    _kernel,
    keep_channels,
    make_divisible,
)
from spaces._registry import register_space

__all__ = ["MobileNetSpace"]

#: (channels at width 1, MobileNetV2 depth = the largest allowed, stride of the first block)
STAGES = ((16, 1, 1), (24, 2, 2), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1))
MAX_DEPTHS = tuple(depth for _, depth, _ in STAGES)
WIDTHS = (0.35, 0.5, 0.75, 1.0)
EXPANSIONS = (1, 3, 6)
KERNEL_SIZES = (3, 5, 7)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
GENES = ("width", "depths", "expansions", "kernel_sizes", "crelu")
#: CReLU (transferred filters) on the first N eligible convolutions (dense, with ReLU6; not the head)
CRELU_CHOICES = (0, 1, 2, 3)


@register_space("mobilenet")
class MobileNetSpace(StudentSpace):
    """MobileNetV2-like inverted-residual students.

    Options: ``num_classes`` (100), ``input_size`` (32), ``in_channels`` (3), ``channel_multiple`` (8:
    widths and pruned channel counts are multiples of it), ``stem_stride`` (1 or 2; default 1 up to 64
    pixels, 2 above).
    """

    #: The gene choices, public for whoever enumerates the space (the largest network, a supernet).
    WIDTHS = WIDTHS
    MAX_DEPTHS = MAX_DEPTHS
    EXPANSIONS = EXPANSIONS
    KERNEL_SIZES = KERNEL_SIZES
    OPT_IN_GENES = ("crelu",)

    # ----------------------------------------------------------------- genes
    def _architecture(self, genes: Mapping[str, Any]) -> Architecture:
        check_unknown(genes, GENES)
        width = check_choice("width", genes.get("width", 1.0), WIDTHS)
        depths = check_depths("depths", genes.get("depths", MAX_DEPTHS), MAX_DEPTHS)
        default_e = [[1 if s == 0 else 6] * d for s, d in enumerate(depths)]
        expansions = per_stage("expansions", genes.get("expansions", default_e), depths, EXPANSIONS)
        kernel_sizes = per_stage("kernel_sizes", genes.get("kernel_sizes", [[3] * d for d in depths]), depths, KERNEL_SIZES)
        crelu = check_choice("crelu", genes.get("crelu", 0), CRELU_CHOICES)
        genes = {"width": float(width), "depths": depths, "expansions": expansions, "kernel_sizes": kernel_sizes}
        if crelu:  # the default (off) is left out, so candidates without CReLU are unchanged
            genes["crelu"] = crelu
        return Architecture(genes, self._layers(genes))

    def _sample_architecture(self, suggest: Suggest) -> dict[str, Any]:
        width = suggest.categorical("width", WIDTHS)
        genes = sample_stages(suggest, "depths", "depth", MAX_DEPTHS,
                              {"expansions": ("expansion", EXPANSIONS), "kernel_sizes": ("kernel", KERNEL_SIZES)})
        if "crelu" in suggest.opt_in:
            genes["crelu"] = suggest.categorical("crelu", CRELU_CHOICES)
        return {"width": width, **genes}

    def _architecture_params(self, genes: Mapping[str, Any], opt_in: frozenset[str]) -> dict[str, Any]:
        params = {"width": genes["width"], **stage_params(genes, "depths", "depth", MAX_DEPTHS,
                                                          {"expansions": "expansion", "kernel_sizes": "kernel"})}
        if "crelu" in opt_in:
            params["crelu"] = genes.get("crelu", 0)
        return params

    @staticmethod
    def _layers(arch: Mapping[str, Any]) -> tuple[Layer, ...]:
        layers = [Layer("stem", prunable=True)]
        for s, stage in enumerate(arch["expansions"]):
            layers += [Layer(f"stages.{s}.{j}", prunable=j == 0 or e != 1) for j, e in enumerate(stage)]
        return (*layers, Layer("head", prunable=True), Layer("classifier", prunable=False))

    # ----------------------------------------------------------------- plan
    def _plan(self, arch: Mapping[str, Any], ratios: Sequence[float], bits: Sequence[int]) -> Seq:
        width = arch["width"]
        stem = self._stem(width, ratios[0], bits[0])
        cin = stem.cout
        stages, i = [], 1
        for s, (es, ks) in enumerate(zip(arch["expansions"], arch["kernel_sizes"])):
            cout = self._stage_width(s, width, ratios[i])
            blocks = []
            for j, (e, k) in enumerate(zip(es, ks)):
                blocks.append(self._block(s, j, cin, cout, e, k, ratios[i], bits[i]))
                i += 1
                cin = cout
            stages.append(Seq(str(s), tuple(blocks)))
        return with_crelu(Seq("", (stem, Seq("stages", tuple(stages)), *self._tail(cin, width, ratios[-2], bits[-2],
                                                                                   bits[-1]))),
                          arch.get("crelu", 0))

    def _stem(self, width: float, r: float, b: int) -> ConvBN:
        m = self.channel_multiple
        cout = keep_channels(make_divisible(STEM_CHANNELS * width, m), r, m)
        return ConvBN("stem", self.in_channels, cout, 3, self.stem_stride, activation="relu6", bits=b)

    def _stage_width(self, s: int, width: float, r_first: float) -> int:
        """Output channels of stage ``s``, pruned by the ratio of its first block."""
        m = self.channel_multiple
        return keep_channels(make_divisible(STAGES[s][0] * width, m), r_first, m)

    def _block(self, s: int, j: int, cin: int, cout: int, e: int, k: int, r: float, b: int) -> Seq:
        """Block ``j`` of stage ``s``: ``cin`` to ``cout`` channels, expansion ``e``, kernel ``k``."""
        st = STAGES[s][2] if j == 0 else 1
        children = []
        hidden = cin
        if e != 1:
            hidden = keep_channels(cin * e, r, self.channel_multiple)
            children.append(ConvBN("expand", cin, hidden, 1, activation="relu6", bits=b))
        children += [
            ConvBN("dw", hidden, hidden, k, st, groups=hidden, activation="relu6", bits=b),
            ConvBN("project", hidden, cout, 1, activation="none", bits=b),
        ]
        return Seq(str(j), tuple(children), residual=st == 1 and cin == cout)

    def _tail(self, cin: int, width: float, r_head: float, b_head: int, b_classifier: int) -> tuple[Any, ...]:
        m = self.channel_multiple
        head = keep_channels(make_divisible(HEAD_CHANNELS * max(1.0, width), m), r_head, m)
        return (ConvBN("head", cin, head, 1, activation="relu6", bits=b_head), GlobalPool("pool"),
                Linear("classifier", head, self.num_classes, bits=b_classifier))

    # ----------------------------------------------------------------- compiled latency (spaces._compiled)
    def _latency_segments(self, arch: Mapping[str, Any], ratios: Sequence[float], bits: Sequence[int]) -> list[Any]:
        """Stem, each block, then head, pool and classifier. A stage's first block is keyed by its stage and
        width (its output width is the stage's); a later block maps its input width to itself (the state)."""
        width = arch["width"]
        keys: list[Any] = [("stem", width, ratios[0], bits[0], arch.get("crelu", 0))]
        append, i = keys.append, 1
        for s, es, ks in zip(range(len(STAGES)), arch["expansions"], arch["kernel_sizes"]):
            append(("first", s, width, es[0], ks[0], ratios[i], bits[i]))
            n = len(es)
            if n > 1:
                keys.extend(zip(es[1:], ks[1:], ratios[i + 1:i + n], bits[i + 1:i + n]))
            i += n
        keys.append(("tail", width, ratios[-2], bits[-2], bits[-1]))
        return keys

    def _segment_signature(self, key: tuple[Any, ...], state: Any) -> Any:
        """What decides a block's kernels once its ratios are rounded to channels (None: use the key)."""
        if key[0] in ("stem", "tail"):
            return None
        cin, m = state[0][0], self.channel_multiple
        if key[0] == "first":
            _, s, width, e, k, r, b = key
            return ("first", state, s, self._stage_width(s, width, r), e != 1,
                    keep_channels(cin * e, r, m) if e != 1 else cin, k, b)
        e, k, r, b = key
        return (state, e != 1, keep_channels(cin * e, r, m) if e != 1 else cin, k, b)

    def _segment_kernels(self, key: tuple[Any, ...], state: Any) -> tuple[Any, list[Kernel]]:
        """Kernels of one segment; the state is (shape, CReLUs left) after the previous segment."""
        if key[0] == "stem":
            _, width, r, b, crelu = key
            shape, left, nodes = self.input_shape, crelu, (self._stem(width, r, b),)
        else:
            shape, left = state
            if key[0] == "first":
                _, s, width, e, k, r, b = key
                nodes = (self._block(s, 0, shape[0], self._stage_width(s, width, r), e, k, r, b),)
            elif key[0] == "tail":
                nodes = self._tail(shape[0], *key[1:])
            else:
                e, k, r, b = key
                nodes = (self._block(0, 1, shape[0], shape[0], e, k, r, b),)
        root, left = crelu_walk(Seq("", nodes), left)
        out, kernels = root.kernels(shape)
        return (out, left), kernels

    # ----------------------------------------------------------------- segment codes (spaces._compiled)
    #: kinds of the coded segments: the stem, a block's expansion, depthwise and projection (+ residual add)
    #: convolutions, the head convolution, then global pooling and the classifier
    _STEM, _EXPAND, _DW, _PROJECT, _HEAD, _POOL_CLASSIFIER = range(6)

    def _segment_codes(self, arch: Sequence[Mapping[str, Any]], prune_ratios: Sequence[Sequence[float]],
                       bits: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray] | None:
        """One code per convolution (see :mod:`spaces._codes`), the channel counts of a whole batch computed
        with numpy as :meth:`_plan` computes them one candidate at a time."""
        m, n = self.channel_multiple, len(arch)
        widths = [genes["width"] for genes in arch]
        crelus = [genes.get("crelu", 0) for genes in arch]
        depths: list[int] = []
        exps: list[int] = []
        ksizes: list[int] = []
        add_depths, add_exps, add_ksizes = depths.extend, exps.extend, ksizes.extend  # bound once: the hot loop
        for genes in arch:
            add_depths(genes["depths"])
            for stage in genes["expansions"]:
                add_exps(stage)
            for stage in genes["kernel_sizes"]:
                add_ksizes(stage)
        flat = chain.from_iterable
        n_stages = len(STAGES)
        d = np.array(depths, dtype=np.intp)
        nb = d.reshape(n, n_stages).sum(1)  # blocks per candidate
        e, k = np.array(exps, dtype=np.int64), np.array(ksizes, dtype=np.int64)
        r, b = np.fromiter(flat(prune_ratios), dtype=np.float64), np.fromiter(flat(bits), dtype=np.int64)
        if len(e) != nb.sum() or len(r) != (nb + 3).sum():
            return None
        cand = np.repeat(np.arange(n), nb)  # per block: its candidate
        blk0 = np.cumsum(nb) - nb  # first block of each candidate
        lay0 = np.cumsum(nb + 3) - (nb + 3)  # first layer (the stem) of each candidate
        layer = np.arange(len(e)) - blk0[cand] + lay0[cand] + 1  # per block: its layer
        rb, bb = r[layer], b[layer]
        stage = np.repeat(np.tile(np.arange(n_stages), n), d)
        stage_first = np.cumsum(d) - d  # the first block of every (candidate, stage)
        first = np.zeros(len(e), dtype=bool)
        first[stage_first] = True
        # channels (the width multiplier's rounded ones per distinct width of the batch): a stage's width is
        # pruned by its first block's ratio and inherited by the rest
        uw, wi = np.unique(np.array(widths, dtype=np.float64), return_inverse=True)
        uw_list = uw.tolist()
        stage_base = np.array([[make_divisible(c * v, m) for c, _, _ in STAGES] for v in uw_list], dtype=np.int64)
        cout_first = keep_channels_array(stage_base[wi.reshape(-1)].reshape(-1), rb[stage_first], m)
        cout = np.repeat(cout_first, d)
        stem_base = np.array([make_divisible(STEM_CHANNELS * v, m) for v in uw_list], dtype=np.int64)
        head_base = np.array([make_divisible(HEAD_CHANNELS * max(1.0, v), m) for v in uw_list], dtype=np.int64)
        stem = keep_channels_array(stem_base[wi.reshape(-1)], r[lay0], m)
        last = lay0 + nb + 1  # the head's layer
        head = keep_channels_array(head_base[wi.reshape(-1)], r[last], m)
        cin = np.empty_like(cout)
        cin[1:] = cout[:-1]
        cin[blk0] = stem
        expand = e != 1
        hidden = np.where(expand, keep_channels_array(cin * e, rb, m), cin)
        strides = np.array([st for _, _, st in STAGES], dtype=np.int64)
        stride = np.where(first, strides[stage], 1)
        residual = (stride == 1) & (cin == cout)
        # spatial size at each stage's input and output (odd kernels, padding k // 2)
        size_in, size_out, h = [], [], (self.input_size - 1) // self.stem_stride + 1
        for _, _, st in STAGES:
            size_in.append(h)
            h = (h - 1) // st + 1
            size_out.append(h)
        size_in_a, size_out_a = np.array(size_in), np.array(size_out)
        size = np.where(first, size_in_a[stage], size_out_a[stage])
        # CReLU on the first N eligible convolutions (dense, ReLU6, even channels): the stem, then expansions
        n_crelu = np.array(crelus, dtype=np.int64)
        stem_ok = (stem % 2 == 0) & (stem >= 2)
        exp_ok = expand & (hidden % 2 == 0) & (hidden >= 2)
        before = np.cumsum(exp_ok) - exp_ok  # eligible expansions before each block, across candidates
        rank = before - before[blk0][cand] + stem_ok[cand]
        exp_crelu = exp_ok & (rank < n_crelu[cand])
        stem_crelu = stem_ok & (n_crelu > 0)
        # where each candidate's codes go: stem, per block [expansion], depthwise, projection, head, pool+classifier
        per_block = 2 + expand
        count = 3 + np.bincount(cand, weights=per_block, minlength=n).astype(np.intp)
        c0 = np.cumsum(count) - count
        pb_before = np.cumsum(per_block) - per_block
        at = c0[cand] + 1 + pb_before - pb_before[blk0][cand]  # the block's first code
        codes = np.empty(int(count.sum()), dtype=np.int64)
        ms, sizes_last = self.input_size, int(size_out_a[-1])
        packed = [
            (c0, pack(kind=self._STEM, size=ms, cin=self.in_channels, cout=stem, kernel_size=3,
                      stride=self.stem_stride, bits=b[lay0], flag=stem_crelu)),
            (at[expand], pack(kind=self._EXPAND, size=size[expand], cin=cin[expand], cout=hidden[expand],
                              kernel_size=1, stride=1, bits=bb[expand], flag=exp_crelu[expand])),
            (at + expand, pack(kind=self._DW, size=size, cin=hidden, cout=hidden, kernel_size=k, stride=stride,
                               bits=bb)),
            (at + expand + 1, pack(kind=self._PROJECT, size=(size - 1) // stride + 1, cin=hidden, cout=cout,
                                   kernel_size=1, stride=1, bits=bb, flag=residual)),
            (c0 + count - 2, pack(kind=self._HEAD, size=sizes_last, cin=cout[blk0 + nb - 1], cout=head,
                                  kernel_size=1, stride=1, bits=b[last])),
            (c0 + count - 1, pack(kind=self._POOL_CLASSIFIER, size=sizes_last, cin=head, cout=self.num_classes,
                                  bits=b[last + 1])),
        ]
        for where, values in packed:
            if values is None:
                return None
            codes[where] = values
        return codes, count

    def _code_kernels(self, code: int) -> list[Kernel]:
        """The kernels of one segment code of :meth:`_segment_codes`."""
        f = unpack(code)
        kind, ci, co, b = f["kind"], f["cin"], f["cout"], f["bits"]
        shape = (ci, f["size"], f["size"])
        if kind == self._POOL_CLASSIFIER:
            out, kernels = GlobalPool("pool").kernels(shape)
            return kernels + Linear("classifier", ci, co, bits=b).kernels(out)[1]
        if kind == self._DW:
            node = ConvBN("dw", ci, ci, f["kernel_size"], f["stride"], groups=ci, activation="relu6", bits=b)
        elif kind == self._PROJECT:
            node = ConvBN("project", ci, co, 1, activation="none", bits=b)
        else:
            name = {self._STEM: "stem", self._EXPAND: "expand", self._HEAD: "head"}[kind]
            node = ConvBN(name, ci, co, f["kernel_size"], f["stride"], activation="relu6", bits=b,
                          crelu=bool(f["flag"]))
        out, kernels = node.kernels(shape)
        if kind == self._PROJECT and f["flag"]:
            kernels.append(_kernel("add", out))
        return kernels
