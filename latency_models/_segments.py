"""`SegmentPredictor`: a predictor's milliseconds for models given as sequences of summarised segments.

A model's prediction (see :mod:`latency_models._predictor`) is an intercept, a sum of per-kernel
contributions, and the cost of every bit-width change between consecutive weight layers (conv / linear),
plus the change back to float32 at the end (on a device with a blocked layout, the *state* of a float kernel is
its layout, and its changes are priced the same way: "bits" below means that state). A *segment* is any contiguous run of a model's kernels; many
models share segments (a search space's blocks recur across candidates). This module summarises a segment
once, for one predictor:

- ``contribution``: the sum of its kernels' contributions and of the bit-width changes *inside* it;
- ``first_bits`` and ``first_mel``: the bits of its first weight layer and the millions of activation
  elements that layer reads (0 and 0 when the segment has no weight layer: it is transparent to bits);
- ``last_bits``: the bits of its last weight layer.

A model is then predicted from its segment ids alone: the summaries are combined with the changes between
segments (from the last bits of the previous segment that has a weight layer to the next one's first bits),
vectorised with numpy over a whole batch, so that predicting a model costs no Python work per kernel. The
result equals ``predictor.predict_many`` of the concatenated kernel lists up to float rounding (sums are
taken in another order), including the floor ``min_model_ms``, the gene terms, the outside model's blend (each
segment also sums its kernels' outside features) and the blend with prior predictors (each prior is summarised
the same way). Nothing here knows where the segments come from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, NamedTuple, Sequence

import numpy as np

from latency_models._kernel import Kernel

if TYPE_CHECKING:
    from latency_models._predictor import LatencyPredictor

__all__ = ["SegmentPredictor", "SegmentSummary"]

#: The methods that make a LatencyPredictor's numbers: a subclass overriding one is not compiled.
_PREDICTING = ("predict_many", "predict", "_records", "_sum", "_tr", "_gene_ms", "_onnx_kernels", "_outside_features",
               "_outside_sums")
#: Bits index the dense transition tables, so they must stay below this.
_BITS_LIMIT = 64


class SegmentSummary(NamedTuple):
    """One segment's summary for one predictor.

    ``contribution_ms`` includes the segment's own bit-width changes; ``first_bits`` / ``last_bits`` are 0
    when it has no weight layer; ``first_mel`` is the millions of activation elements its first weight
    layer reads.
    """

    contribution_ms: float
    first_bits: int
    first_mel: float
    last_bits: int


def summarize(predictor: "LatencyPredictor", kernels: Sequence[Kernel]) -> SegmentSummary:
    """The :class:`SegmentSummary` of ``kernels`` (a contiguous run of a model's kernels) for ``predictor``."""
    return _summaries(predictor, [list(kernels)])[0]


def _summaries(predictor: "LatencyPredictor", segments: list[list[Kernel]]) -> list[SegmentSummary]:
    """Summaries of several segments: their new kernels are predicted in one batch."""
    recs = predictor._records([k for ks in segments for k in ks])
    tr = predictor._tr
    out = []
    pos = 0
    for ks in segments:
        total = 0.0
        first_bits, first_mel, prev = 0, 0.0, 0
        for c, bits, mel in recs[pos:pos + len(ks)]:
            total += c
            if not bits:
                continue
            if not first_bits:
                first_bits, first_mel = bits, mel
            elif bits != prev:
                cost = tr.get((prev, bits))
                if cost is not None:
                    total += cost[0] + cost[1] * mel
            prev = bits
        pos += len(ks)
        out.append(SegmentSummary(float(total), int(first_bits), float(first_mel), int(prev)))
    return out


class SegmentPredictor:
    """Predicts models given as sequences of segment ids, each segment summarised once (see the module).

    Usage: ``seg = SegmentPredictor(predictor)``; ``sid = seg.add(kernels)`` for every distinct segment (a
    contiguous run of kernels; id 0 is the empty segment; ``add_many`` summarises several at once, faster); then ``seg.predict_many(ids, lengths)`` with the
    models' segment ids one model after another (``lengths``: segments per model). The milliseconds equal
    ``predictor.predict_many`` of each model's concatenated kernels (with the same ``genes``) to float
    rounding. The predictor must not be refitted or changed afterwards (build a new one instead).
    """

    def __init__(self, predictor: "LatencyPredictor") -> None:
        if not self.supports(predictor):
            raise ValueError(f"predictor={predictor!r} is not allowed; allowed: a latency_models.LatencyPredictor "
                             "that predicts the LatencyPredictor way (see SegmentPredictor.supports)")
        self.predictor = predictor
        #: the prior predictors that carry weight in the blend, each compiled the same way
        self._priors = [(SegmentPredictor(p), w) for p, w in zip(predictor.prior, predictor.prior_weights) if w > 0]
        # the summaries as columns, grown by doubling (row 0: the empty segment)
        self._n = 1
        self._contrib = np.zeros(64)
        self._first_bits = np.zeros(64, dtype=np.intp)
        self._first_mel = np.zeros(64)
        self._last_bits = np.zeros(64, dtype=np.intp)
        #: with an outside model (``predictor.outside``): each segment's summed outside features (segments x 4)
        self._outside = np.zeros((64, 4)) if predictor.outside is not None else None
        t0 = np.zeros((_BITS_LIMIT, _BITS_LIMIT))
        t1 = np.zeros((_BITS_LIMIT, _BITS_LIMIT))
        for (a, b), (c0, c1) in predictor._tr.items():
            if not (0 <= a < _BITS_LIMIT and 0 <= b < _BITS_LIMIT):
                raise ValueError(f"predictor transition {a}>{b} is not supported; allowed: bits below {_BITS_LIMIT}")
            t0[a, b], t1[a, b] = c0, c1
        self._t0, self._t1 = t0, t1

    @staticmethod
    def supports(predictor: Any) -> bool:
        """Whether ``predictor`` can be compiled: a :class:`~latency_models.LatencyPredictor` (and priors) whose
        class does not override how it predicts (a subclass that does is predicted its own way, never here)."""
        from latency_models._predictor import LatencyPredictor

        if not isinstance(predictor, LatencyPredictor):
            return False
        cls = type(predictor)
        if any(getattr(cls, name) is not getattr(LatencyPredictor, name) for name in _PREDICTING):
            return False
        return all(SegmentPredictor.supports(p) for p in predictor.prior)

    def __len__(self) -> int:
        """Number of segment ids (the empty segment 0 included)."""
        return self._n

    def add(self, kernels: Sequence[Kernel]) -> int:
        """Summarise a segment (for this predictor and its priors); returns its id."""
        return self.add_many([kernels])[0]

    def add_many(self, segments: Sequence[Sequence[Kernel]]) -> list[int]:
        """Summarise several segments at once (their new kernels predicted in one batch); returns their ids."""
        segments = [list(ks) for ks in segments]
        for j, ks in enumerate(segments):
            for i, k in enumerate(ks):
                if not isinstance(k, Kernel):
                    raise ValueError(f"segments[{j}][{i}] is a {type(k).__name__}; allowed: latency_models.Kernel")
        summaries = _summaries(self.predictor, segments)
        for s in summaries:
            if s.first_bits >= _BITS_LIMIT or s.last_bits >= _BITS_LIMIT:
                raise ValueError(f"a segment with {s.first_bits}/{s.last_bits}-bit layers is not supported; "
                                 f"allowed: bits below {_BITS_LIMIT}")
        for prior, _w in self._priors:
            prior.add_many(segments)
        start, stop = self._n, self._n + len(summaries)
        if stop > len(self._contrib):
            size = max(stop, 2 * len(self._contrib))
            for name in ("_contrib", "_first_bits", "_first_mel", "_last_bits", "_outside"):
                old = getattr(self, name)
                if old is None:
                    continue
                new = np.zeros((size, *old.shape[1:]), dtype=old.dtype)
                new[:start] = old[:start]
                setattr(self, name, new)
        if summaries:
            c, fb, fm, lb = zip(*summaries)
            self._contrib[start:stop], self._first_bits[start:stop] = c, fb
            self._first_mel[start:stop], self._last_bits[start:stop] = fm, lb
        if self._outside is not None and segments:
            self._outside[start:stop] = self.predictor._outside_sums(segments)
        self._n = stop
        return list(range(start, stop))

    def summary(self, segment_id: int) -> SegmentSummary:
        """The summary of segment ``segment_id`` for this predictor (not its priors)."""
        i = int(segment_id)
        if not 0 <= i < self._n:
            raise ValueError(f"segment_id={segment_id!r} is not an id returned by add (0 to {self._n - 1})")
        return SegmentSummary(float(self._contrib[i]), int(self._first_bits[i]), float(self._first_mel[i]),
                              int(self._last_bits[i]))

    def _columns(self) -> tuple[np.ndarray, ...]:
        return self._contrib, self._first_bits, self._first_mel, self._last_bits

    def predict_many(self, segment_ids: Sequence[int] | np.ndarray, lengths: Sequence[int] | np.ndarray, *,
                     genes: Sequence[Mapping[str, Any] | None] | None = None) -> np.ndarray:
        """Milliseconds of each model: ``segment_ids`` (1-D, ids from :meth:`add`, the models' segments one
        model after another) split by ``lengths`` (segments per model; 0 is a model with no kernels).

        ``genes``: one mapping (or None) per model, as ``LatencyPredictor.predict_many`` takes them.
        """
        ids = np.asarray(segment_ids, dtype=np.intp).reshape(-1)
        lengths = np.asarray(lengths, dtype=np.intp).reshape(-1)
        if (lengths < 0).any() or int(lengths.sum()) != len(ids):
            raise ValueError(f"lengths sum to {int(lengths.sum())} for {len(ids)} segment_ids; allowed: non-negative "
                             "counts that sum to the number of ids")
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self)):
            raise ValueError(f"segment_ids must be ids returned by add (0 to {len(self) - 1})")
        n = len(lengths)
        if genes is not None and len(genes) != n:
            raise ValueError(f"genes has {len(genes)} entries for {n} models; allowed: one per model")
        return self._predict(ids, lengths, _Layout(ids, lengths, self._columns()), genes)

    def _predict(self, ids: np.ndarray, lengths: np.ndarray, layout: "_Layout",
                 genes: Sequence[Mapping[str, Any] | None] | None) -> np.ndarray:
        p = self.predictor
        n = len(lengths)
        contrib = self._columns()[0]
        total = np.bincount(layout.row, weights=contrib[ids], minlength=n) if len(ids) else np.zeros(n)
        if len(layout.w_pos):
            t0, t1 = self._t0, self._t1
            cost = np.where(layout.change, t0[layout.prev, layout.w_bits] + t1[layout.prev, layout.w_bits] * layout.w_mel, 0.0)
            total += np.bincount(layout.w_row, weights=cost, minlength=n)
            total[layout.end_row] += t0[layout.end_bits, 32]
        out = p.intercept_ms + total
        if p.gene_ms:
            out += np.array([p._gene_ms(None if genes is None else genes[i]) for i in range(n)])
        if self._outside is not None:
            of = self._outside[ids]
            feats = np.stack([np.bincount(layout.row, weights=of[:, j], minlength=n) for j in range(4)], axis=1) \
                if len(ids) else np.zeros((n, 4))
            out = p.outside.blend(out, feats)
        out = np.maximum(out, p.min_model_ms)
        if p.prior:
            out = p.own_weight * out + p.blend_intercept_ms
            for prior, w in self._priors:
                out += w * prior._predict(ids, lengths, layout, genes)
            out = np.maximum(out, p.min_model_ms)
        return out


class _Layout:
    """Where the weighted segments of a batch are and which bits they change from (predictor-independent)."""

    def __init__(self, ids: np.ndarray, lengths: np.ndarray, columns: tuple[np.ndarray, ...]) -> None:
        _, first_bits, first_mel, last_bits = columns
        self.row = np.repeat(np.arange(len(lengths)), lengths)
        fb = first_bits[ids]
        self.w_pos = w = np.flatnonzero(fb > 0)
        self.w_row = wr = self.row[w]
        self.w_bits = fb[w]
        self.w_mel = first_mel[ids[w]]
        lb = last_bits[ids[w]]
        prev = np.empty(len(w), dtype=np.intp)
        if len(w):
            prev[0] = 32
            prev[1:] = lb[:-1]
            new_row = np.ones(len(w), dtype=bool)
            new_row[1:] = wr[1:] != wr[:-1]
            prev[new_row] = 32  # every model starts from its float32 input
            last = np.ones(len(w), dtype=bool)
            last[:-1] = wr[:-1] != wr[1:]
            ends = last & (lb != 32)
            self.end_row, self.end_bits = wr[ends], lb[ends]
        else:
            self.end_row = self.end_bits = np.zeros(0, dtype=np.intp)
        self.prev = prev
        self.change = self.w_bits != prev
