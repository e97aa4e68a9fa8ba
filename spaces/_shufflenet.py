"""`shufflenet`: ShuffleNetV2-like students (channel split, channel shuffle, concat).

Macro structure (ShuffleNetV2): stem 3x3 conv to 24 channels (with stride 2 followed by a 3x3/2 max pool
when ``stem_stride=2``), 3 stages of units, head 1x1 conv to 1024 channels, global average pool,
classifier. Activations are ReLU. A stage's first unit halves the resolution: branch 1 is a KxK depthwise
conv (stride 2) and a 1x1 conv, branch 2 a 1x1 conv, a KxK depthwise conv (stride 2) and a 1x1 conv, the
two are concatenated and shuffled. Every other unit splits its input in halves, runs branch 2 (stride 1)
on the second half, concatenates it to the first and shuffles. Stage widths at width 1 are 116, 232, 464
(two branches of 58, 116, 232), each scaled by the stage's width multiplier and rounded to
``2 * channel_multiple``.

Genes: ``repeats`` (units per stage), ``widths`` (multiplier per stage), ``kernel_sizes`` (one per unit,
nested per stage), and the opt-in ``crelu`` (0-3: CReLU, i.e. transferred filters, on the first N dense
convolutions with ReLU in graph order, the head excluded: the stem, then the first unit's 1x1 convolutions;
drawn by ``sample`` only with ``genes=("crelu",)``; 0 is left out of the genes). The default
(``candidate()``) is ShuffleNetV2 1.0x with 3x3 kernels.

Per-layer table: ``stem``, ``stages.{s}.{j}``, ``head``, ``classifier``. A prune ratio removes that
fraction of a layer's hidden and output channels, rounded to ``channel_multiple``: the stem's and head's
output channels; a unit's hidden (branch 2 middle) channels; and, for a stage's first unit, also the
branch output widths, i.e. the stage width that the later units (whose halves pass straight through)
inherit.
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
from spaces._codes import first_n_per_row, keep_channels_array, pack, unpack
from spaces._plan import (
    ConvBN,
    crelu_walk,
    with_crelu,
    DualUnit,
    GlobalPool,
    Linear,
    MaxPool,
    QDQ_BITS,
    QLINEAR_BITS,
    Seq,
    SplitUnit,
    _kernel,
    keep_channels,
    make_divisible,
    pool_bits,
)
from spaces._registry import register_space

__all__ = ["ShuffleNetSpace"]

#: Channels of one branch at width 1, per stage (ShuffleNetV2 1.0x: 116, 232, 464 per stage).
BRANCH_CHANNELS = (58, 116, 232)
#: ShuffleNetV2 repeats: the largest allowed and the default.
MAX_REPEATS = (4, 8, 4)
WIDTHS = (0.5, 0.75, 1.0)
KERNEL_SIZES = (3, 5, 7)
STEM_CHANNELS = 24
HEAD_CHANNELS = 1024
GENES = ("repeats", "widths", "kernel_sizes", "crelu")
#: CReLU (transferred filters) on the first N eligible convolutions (dense, with ReLU; not the head)
CRELU_CHOICES = (0, 1, 2, 3)


@register_space("shufflenet")
class ShuffleNetSpace(StudentSpace):
    """ShuffleNetV2-like students.

    Options: ``num_classes`` (100), ``input_size`` (32), ``in_channels`` (3), ``channel_multiple`` (8),
    ``stem_stride`` (1: no max pool; 2: stride-2 stem and a max pool, as ShuffleNetV2 on ImageNet;
    default 1 up to 64 pixels, 2 above).
    """

    OPT_IN_GENES = ("crelu",)

    # ----------------------------------------------------------------- genes
    def _architecture(self, genes: Mapping[str, Any]) -> Architecture:
        check_unknown(genes, GENES)
        repeats = check_depths("repeats", genes.get("repeats", MAX_REPEATS), MAX_REPEATS)
        widths = genes.get("widths", (1.0,) * len(MAX_REPEATS))
        if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or len(widths) != len(MAX_REPEATS):
            raise ValueError(f"widths={widths!r} is not allowed; allowed: {len(MAX_REPEATS)} multipliers, one per stage")
        widths = [float(check_choice(f"widths[{s}]", w, WIDTHS)) for s, w in enumerate(widths)]
        kernel_sizes = per_stage("kernel_sizes", genes.get("kernel_sizes", [[3] * r for r in repeats]), repeats, KERNEL_SIZES)
        crelu = check_choice("crelu", genes.get("crelu", 0), CRELU_CHOICES)
        genes = {"repeats": repeats, "widths": widths, "kernel_sizes": kernel_sizes}
        if crelu:  # the default (off) is left out, so candidates without CReLU are unchanged
            genes["crelu"] = crelu
        return Architecture(genes, self._layers(genes))

    def _sample_architecture(self, suggest: Suggest) -> dict[str, Any]:
        widths = [suggest.categorical(f"width_{s}", WIDTHS) for s in range(len(MAX_REPEATS))]
        genes = sample_stages(suggest, "repeats", "repeats", MAX_REPEATS, {"kernel_sizes": ("kernel", KERNEL_SIZES)})
        if "crelu" in suggest.opt_in:
            genes["crelu"] = suggest.categorical("crelu", CRELU_CHOICES)
        return {"widths": widths, **genes}

    def _architecture_params(self, genes: Mapping[str, Any], opt_in: frozenset[str]) -> dict[str, Any]:
        params = {f"width_{s}": w for s, w in enumerate(genes["widths"])}
        params.update(stage_params(genes, "repeats", "repeats", MAX_REPEATS, {"kernel_sizes": "kernel"}))
        if "crelu" in opt_in:
            params["crelu"] = genes.get("crelu", 0)
        return params

    @staticmethod
    def _layers(arch: Mapping[str, Any]) -> tuple[Layer, ...]:
        layers = [Layer("stem", prunable=True)]
        for s, n in enumerate(arch["repeats"]):
            layers += [Layer(f"stages.{s}.{j}", prunable=True) for j in range(n)]
        return (*layers, Layer("head", prunable=True), Layer("classifier", prunable=False))

    # ----------------------------------------------------------------- plan
    def _plan(self, arch: Mapping[str, Any], ratios: Sequence[float], bits: Sequence[int]) -> Seq:
        stem = self._stem(ratios[0], bits[0], bits[1])
        cin = stem[0].cout
        stages, i = [], 1
        for s, (w, kernels) in enumerate(zip(arch["widths"], arch["kernel_sizes"])):
            branch = self._branch_width(s, w, ratios[i])
            units = []
            for j, k in enumerate(kernels):
                units.append(self._first_unit(cin, branch, k, bits[i]) if j == 0 else
                             self._unit(j, branch, k, ratios[i], bits[i]))
                i += 1
                cin = 2 * branch
            stages.append(Seq(str(s), tuple(units)))
        return with_crelu(Seq("", (*stem, Seq("stages", tuple(stages)), *self._tail(cin, ratios[-2], bits[-2], bits[-1]))),
                          arch.get("crelu", 0))

    def _stem(self, r: float, b: int, b_next: int) -> tuple[Any, ...]:
        """The stem convolution (at ``b`` bits), and its max pool with a stride-2 stem, which runs at
        :func:`pool_bits` of the stem and the first unit (``b_next`` bits)."""
        stem: tuple[Any, ...] = (ConvBN("stem", self.in_channels, keep_channels(STEM_CHANNELS, r, self.channel_multiple), 3,
                                        self.stem_stride, bits=b),)
        return (*stem, MaxPool("stem_pool", 3, 2, 1, bits=pool_bits(b, b_next))) if self.stem_stride == 2 else stem

    def _branch_width(self, s: int, w: float, r_first: float) -> int:
        """Channels of one branch of stage ``s`` (half its width), pruned by the ratio of its first unit."""
        m = self.channel_multiple
        return keep_channels(make_divisible(BRANCH_CHANNELS[s] * w, m), r_first, m)

    @staticmethod
    def _first_unit(cin: int, branch: int, k: int, b: int) -> DualUnit:
        return DualUnit(
            "0",
            Seq("branch1", (
                ConvBN("dw", cin, cin, k, 2, groups=cin, activation="none", bits=b),
                ConvBN("pw", cin, branch, 1, bits=b),
            )),
            Seq("branch2", (
                ConvBN("pw1", cin, branch, 1, bits=b),
                ConvBN("dw", branch, branch, k, 2, groups=branch, activation="none", bits=b),
                ConvBN("pw2", branch, branch, 1, bits=b),
            )),
        )

    def _unit(self, j: int, branch: int, k: int, r: float, b: int) -> SplitUnit:
        mid = keep_channels(branch, r, self.channel_multiple)
        return SplitUnit(str(j), Seq("branch", (
            ConvBN("pw1", branch, mid, 1, bits=b),
            ConvBN("dw", mid, mid, k, 1, groups=mid, activation="none", bits=b),
            ConvBN("pw2", mid, branch, 1, bits=b),
        )))

    def _tail(self, cin: int, r_head: float, b_head: int, b_classifier: int) -> tuple[Any, ...]:
        head = keep_channels(HEAD_CHANNELS, r_head, self.channel_multiple)
        return (ConvBN("head", cin, head, 1, bits=b_head), GlobalPool("pool"),
                Linear("classifier", head, self.num_classes, bits=b_classifier))

    # ----------------------------------------------------------------- compiled latency (spaces._compiled)
    def _latency_segments(self, arch: Mapping[str, Any], ratios: Sequence[float], bits: Sequence[int]) -> list[Any]:
        """Stem, each unit, then head, pool and classifier. The stem is keyed with the first unit's bits too
        (its max pool's bits follow them); a stage's first unit by its stage and width; a later unit keeps its
        input width (the state), which is twice its branch width."""
        keys: list[Any] = [("stem", ratios[0], bits[0], arch.get("crelu", 0), bits[1])]  # + the first unit's bits
        append, i = keys.append, 1
        for s, w, ks in zip(range(len(BRANCH_CHANNELS)), arch["widths"], arch["kernel_sizes"]):
            append(("first", s, w, ks[0], ratios[i], bits[i]))
            n = len(ks)
            if n > 1:
                keys.extend(zip(ks[1:], ratios[i + 1:i + n], bits[i + 1:i + n]))
            i += n
        keys.append(("tail", ratios[-2], bits[-2], bits[-1]))
        return keys

    def _segment_signature(self, key: tuple[Any, ...], state: Any) -> Any:
        """What decides a unit's kernels once its ratio is rounded to channels (None: use the key)."""
        if key[0] in ("stem", "tail"):
            return None
        if key[0] == "first":
            _, s, w, k, r, b = key
            return ("first", state, self._branch_width(s, w, r), k, b)
        k, r, b = key
        return (state, keep_channels(state[0][0] // 2, r, self.channel_multiple), k, b)

    def _segment_kernels(self, key: tuple[Any, ...], state: Any) -> tuple[Any, list[Kernel]]:
        """Kernels of one segment; the state is (shape, CReLUs left) after the previous segment."""
        if key[0] == "stem":
            _, r, b, crelu, b_next = key
            shape, left, nodes = self.input_shape, crelu, self._stem(r, b, b_next)
        else:
            shape, left = state
            if key[0] == "first":
                _, s, w, k, r, b = key
                nodes = (self._first_unit(shape[0], self._branch_width(s, w, r), k, b),)
            elif key[0] == "tail":
                nodes = self._tail(shape[0], *key[1:])
            else:
                k, r, b = key
                nodes = (self._unit(1, shape[0] // 2, k, r, b),)
        root, left = crelu_walk(Seq("", nodes), left)
        out, kernels = root.kernels(shape)
        return (out, left), kernels

    # ----------------------------------------------------------------- segment codes (spaces._compiled)
    #: kinds of the coded segments: the stem (and its max pool); a first unit's branch-1 depthwise and 1x1
    #: convolutions, branch-2 1x1, depthwise and 1x1 (+ concat, shuffle) convolutions; a later unit's split
    #: (+ 1x1), depthwise and 1x1 (+ concat, shuffle); the head convolution; pooling and the classifier
    (_STEM, _B1_DW, _B1_PW, _B2_PW1, _B2_DW, _B2_PW2, _U_PW1, _U_DW, _U_PW2, _HEAD,
     _POOL_CLASSIFIER, _STEM_Q, _B2_PW2_Q) = range(13)  # _STEM_Q: a stem whose max pool runs at 8 bits;
    # _B2_PW2_Q: a first unit's last branch-2 convolution whose unit's shuffle runs at 8 bits (shuffle_bits)

    def _segment_codes(self, arch: Sequence[Mapping[str, Any]], prune_ratios: Sequence[Sequence[float]],
                       bits: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray] | None:
        """One code per convolution (see :mod:`spaces._codes`), the channel counts of a whole batch computed
        with numpy as :meth:`_plan` computes them one candidate at a time."""
        m, n, n_stages = self.channel_multiple, len(arch), len(BRANCH_CHANNELS)
        widths, crelus, repeats, ksizes = [], [], [], []
        flat = chain.from_iterable
        for genes in arch:
            widths.extend(genes["widths"])
            crelus.append(genes.get("crelu", 0))
            repeats.extend(genes["repeats"])
            ksizes.extend(flat(genes["kernel_sizes"]))
        d = np.array(repeats, dtype=np.intp)
        nu = d.reshape(n, n_stages).sum(1)  # units per candidate
        k = np.array(ksizes, dtype=np.int64)
        r, b = np.fromiter(flat(prune_ratios), dtype=np.float64), np.fromiter(flat(bits), dtype=np.int64)
        if len(k) != nu.sum() or len(r) != (nu + 3).sum():
            return None
        cand = np.repeat(np.arange(n), nu)
        u0 = np.cumsum(nu) - nu
        lay0 = np.cumsum(nu + 3) - (nu + 3)
        layer = np.arange(len(k)) - u0[cand] + lay0[cand] + 1
        ru, bu = r[layer], b[layer]
        stage_first = np.cumsum(d) - d  # the first unit of every (candidate, stage)
        first = np.zeros(len(k), dtype=bool)
        first[stage_first] = True
        stage = np.repeat(np.tile(np.arange(n_stages), n), d)
        # each stage's rounded branch channels, per distinct width of the batch
        uw, wi = np.unique(np.array(widths, dtype=np.float64), return_inverse=True)
        base = np.array([[make_divisible(c * v, m) for c in BRANCH_CHANNELS] for v in uw.tolist()], dtype=np.int64)
        stage_base = base[wi.reshape(-1), np.tile(np.arange(n_stages), n)]
        branch_of_stage = keep_channels_array(stage_base, ru[stage_first], m)
        branch = np.repeat(branch_of_stage, d)
        stem = keep_channels_array(np.full(n, STEM_CHANNELS), r[lay0], m)
        # a first unit's input: the stem, or the previous stage's two branches
        prev = np.empty(n * n_stages, dtype=np.int64)
        per_cand = branch_of_stage.reshape(n, n_stages)
        prev.reshape(n, n_stages)[:, 0] = stem
        prev.reshape(n, n_stages)[:, 1:] = 2 * per_cand[:, :-1]
        cin_first = prev  # per (candidate, stage)
        mid = keep_channels_array(branch, ru, m)
        # spatial sizes: after the stem (and its max pool), each stage's input and output
        h = (self.input_size - 1) // self.stem_stride + 1
        if self.stem_stride == 2:
            h = (h - 1) // 2 + 1
        size_in, size_out = [], []
        for _ in range(n_stages):
            size_in.append(h)
            h = (h - 1) // 2 + 1
            size_out.append(h)
        size_in_a, size_out_a = np.array(size_in), np.array(size_out)
        # where each candidate's codes go: stem, per unit 5 (first) or 3 codes, head, pool+classifier
        per_unit = np.where(first, 5, 3)
        count = 3 + np.bincount(cand, weights=per_unit, minlength=n).astype(np.intp)
        c0 = np.cumsum(count) - count
        pu_before = np.cumsum(per_unit) - per_unit
        at = c0[cand] + 1 + pu_before - pu_before[u0][cand]
        codes = np.empty(int(count.sum()), dtype=np.int64)
        eligible = np.zeros(len(codes), dtype=bool)  # dense convolutions with ReLU and even channels
        fs, later = stage_first, ~first
        at_f, at_l = at[fs], at[later]
        k_f, b_f, br_f, s_f = k[fs], bu[fs], branch[fs], stage[fs]
        h_in, h_out = size_in_a[s_f], size_out_a[s_f]
        br_l, mid_l, h_l, b_l = branch[later], mid[later], size_out_a[stage[later]], bu[later]
        last = lay0 + nu + 1  # the head's layer
        head = keep_channels_array(np.full(n, HEAD_CHANNELS), r[last], m)
        s_last = int(size_out_a[-1])
        # a stride-2 stem's max pool runs at 8 bits when the stem or the first unit quantises (pool_bits)
        pool_q = (np.isin(b[lay0], QDQ_BITS) | np.isin(bu[u0], QDQ_BITS)) if self.stem_stride == 2 else np.zeros(n, bool)
        even = lambda c: (c % 2 == 0) & (c >= 2)  # noqa: E731
        packed = [
            (c0, even(stem), dict(kind=np.where(pool_q, self._STEM_Q, self._STEM), size=self.input_size, cin=self.in_channels, cout=stem,
                                  kernel_size=3, stride=self.stem_stride, bits=b[lay0])),
            (at_f, None, dict(kind=self._B1_DW, size=h_in, cin=cin_first, cout=cin_first, kernel_size=k_f,
                              stride=2, bits=b_f)),
            (at_f + 1, even(br_f), dict(kind=self._B1_PW, size=h_out, cin=cin_first, cout=br_f, kernel_size=1,
                                        stride=1, bits=b_f)),
            (at_f + 2, even(br_f), dict(kind=self._B2_PW1, size=h_in, cin=cin_first, cout=br_f, kernel_size=1,
                                        stride=1, bits=b_f)),
            (at_f + 3, None, dict(kind=self._B2_DW, size=h_in, cin=br_f, cout=br_f, kernel_size=k_f, stride=2,
                                  bits=b_f)),
            (at_f + 4, even(br_f), dict(kind=self._B2_PW2, size=h_out, cin=br_f, cout=br_f, kernel_size=1,
                                        stride=1, bits=b_f)),
            (at_l, even(mid_l), dict(kind=self._U_PW1, size=h_l, cin=br_l, cout=mid_l, kernel_size=1, stride=1,
                                     bits=b_l)),
            (at_l + 1, None, dict(kind=self._U_DW, size=h_l, cin=mid_l, cout=mid_l, kernel_size=k[later], stride=1,
                                  bits=b_l)),
            (at_l + 2, even(br_l), dict(kind=self._U_PW2, size=h_l, cin=mid_l, cout=br_l, kernel_size=1, stride=1,
                                        bits=b_l)),
            (c0 + count - 2, None, dict(kind=self._HEAD, size=s_last, cin=2 * branch[u0 + nu - 1], cout=head,
                                        kernel_size=1, stride=1, bits=b[last])),
            (c0 + count - 1, None, dict(kind=self._POOL_CLASSIFIER, size=s_last, cin=head, cout=self.num_classes,
                                        bits=b[last + 1])),
        ]
        for where, ok, fields in packed:
            values = pack(**fields)
            if values is None:
                return None
            codes[where] = values
            if ok is not None:
                eligible[where] = ok
        n_crelu = np.array(crelus, dtype=np.int64)
        crelu = first_n_per_row(eligible, count, n_crelu) if n_crelu.any() else np.zeros(len(codes), dtype=bool)
        codes |= pack(flag=crelu)
        # a first unit shuffles at 8 bits when both branches end in an int8 1x1 convolution (no CReLU on either)
        q8 = np.isin(b_f, QLINEAR_BITS) & ~crelu[at_f + 1] & ~crelu[at_f + 4]
        codes[at_f[q8] + 4] += pack(kind=self._B2_PW2_Q - self._B2_PW2)
        return codes, count

    def _code_kernels(self, code: int) -> list[Kernel]:
        """The kernels of one segment code of :meth:`_segment_codes`."""
        f = unpack(code)
        kind, ci, co, b, crelu = f["kind"], f["cin"], f["cout"], f["bits"], bool(f["flag"])
        k, st = f["kernel_size"], f["stride"]
        shape = (ci, f["size"], f["size"])
        if kind == self._POOL_CLASSIFIER:
            out, kernels = GlobalPool("pool").kernels(shape)
            return kernels + Linear("classifier", ci, co, bits=b).kernels(out)[1]
        if kind in (self._STEM, self._STEM_Q):
            out, kernels = ConvBN("stem", ci, co, k, st, bits=b, crelu=crelu).kernels(shape)
            pool = MaxPool("stem_pool", 3, 2, 1, bits=8 if kind == self._STEM_Q else 32)
            return kernels + (pool.kernels(out)[1] if self.stem_stride == 2 else [])
        if kind in (self._B1_DW, self._B2_DW, self._U_DW):
            return ConvBN("dw", ci, ci, k, st, groups=ci, activation="none", bits=b).kernels(shape)[1]
        node = ConvBN("conv", ci, co, 1, bits=b, crelu=crelu)
        if kind == self._U_PW1:  # the split of a later unit comes first: its input is twice the branch
            split = (2 * ci, f["size"], f["size"])
            return [_kernel("split", split, groups=2), *node.kernels(shape)[1]]
        out, kernels = node.kernels(shape)
        if kind in (self._B2_PW2, self._B2_PW2_Q, self._U_PW2):  # the unit ends: concat both halves, shuffle
            both = (2 * out[0], out[1], out[2])
            kernels += [_kernel("concat", both),
                        _kernel("channel_shuffle", both, groups=2, bits=8 if kind == self._B2_PW2_Q else 32)]
        return kernels
