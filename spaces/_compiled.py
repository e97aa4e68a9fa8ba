"""`CompiledLatency`: a predictor's milliseconds for many candidates of one space, without listing kernels.

``predictor.predict_many([space.kernels(c) for c in cands])`` decodes every candidate into a plan and a
kernel list (about 60 kernels), then sums per kernel: about 1,500 candidates a second. Candidates of a
space share their parts (a block at a given position with given genes is the same block whatever the rest
of the network is), so this evaluator cuts a candidate into the *segments* its space declares, lists and
summarises each distinct segment once (:class:`latency_models.SegmentPredictor`) and predicts a batch from
segment ids with numpy. The milliseconds equal the slow path's to float rounding, for every predictor
(floor, gene terms, prior blend included).

A space opts in with two methods (the built-in ones do):

- ``_latency_segments(genes, prune_ratios, bits) -> list``: one hashable key per segment, in graph order,
  from a validated candidate's parts. A key, together with the *state* the previous segment left (None
  before the first), must decide that segment's kernels; ``None`` instead of a list says this candidate
  cannot be compiled (it is then predicted the slow way).
- ``_segment_kernels(key, state) -> (state_after, kernels)``: the segment's kernels, consecutive in
  ``space.kernels(candidate)``, and the (hashable) state the next segment starts from, e.g. its shape.

and optionally ``_segment_signature(key, state) -> hashable | None``: a cheap value that decides the same
(kernels, state after) as the key in that state, e.g. channel counts instead of the prune ratios that
round to them; keys new to the memo with a known signature then skip listing kernels (None: no signature).

A space may also cut a whole batch at once, with numpy instead of one key at a time (the built-in students
do; the key methods above remain the fallback):

- ``_segment_codes(genes, prune_ratios, bits) -> (codes, lengths) | None``: three lists, one entry per
  validated candidate (its genes, prune ratios and bits); ``codes`` (non-negative int64, 1-D) the
  candidates' segments one candidate after another, in graph order, ``lengths`` how many each has. A code
  alone, without any state, must decide its segment's kernels, so segments can be small (a convolution)
  and few distinct ones exist; ``None`` says this batch cannot be coded (e.g. a channel count too large for
  the code), the keys are then used.
- ``_code_kernels(code) -> kernels``: the kernels of the segment a code stands for, consecutive in
  ``space.kernels(candidate)``.

Codes are used only for an instance of the very class that defines both (an instance of a subclass that
does not write its own is cut by keys).

The memo of codes is a hash table in numpy arrays, looked up for a whole batch at once: a batch costs
Python work per candidate (reading its parts) and per code new to the memo (listing its kernels), not per
segment.

A space that does not define them, or a subclass that overrides how kernels are made (``_plan``,
``kernels``, ...) below the class that defines them, is predicted the slow way: never a wrong number.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Hashable, Sequence

import numpy as np

from latency_models import Kernel, SegmentPredictor

if TYPE_CHECKING:
    from latency_models import LatencyPredictor
    from spaces._candidate import Candidate

__all__ = ["CompiledLatency", "compilable"]

logger = logging.getLogger(__name__)

#: What decides a candidate's kernels: a subclass that overrides one of these below the class that defines
#: the segment methods makes its own kernels, which the segments do not know.
_KERNEL_METHODS = ("_plan", "plan", "kernels", "_decode", "_architecture", "input_shape", "_latency_segments",
                   "_segment_kernels", "_segment_signature")


def _definer(space: Any, name: str) -> type | None:
    """The class of ``space``'s MRO that defines ``name``."""
    return next((c for c in type(space).__mro__ if name in c.__dict__), None)


def compilable(space: Any) -> bool:
    """Whether ``space`` (a :class:`~spaces.SearchSpace`) declares its segments (see the module) for the
    class it is an instance of."""
    owner = _definer(space, "_latency_segments")
    if owner is None or _definer(space, "_segment_kernels") is None:
        return False
    return all((d := _definer(space, name)) is None or issubclass(owner, d) for name in _KERNEL_METHODS)


class CompiledLatency:
    """Milliseconds of candidates of ``space`` (a :class:`~spaces.SearchSpace`) under ``predictor``, from
    memoised segments (see the module).

    ``predict_many(candidates)`` equals ``predictor.predict_many([space.kernels(c) for c in candidates],
    genes=[c.genes for c in candidates])`` to float rounding (``genes=False``: without genes). Build it once
    per (space, predictor) pair, e.g. with ``space.latency_evaluator(predictor)``, and keep it: its memo is
    what makes it fast. The predictor must not change afterwards.

    Any predictor with ``predict_many(kernel_lists, genes=...)`` is accepted; only a plain
    ``LatencyPredictor`` is compiled (:meth:`latency_models.SegmentPredictor.supports`).

    Attributes:
        compiled: whether the space declares its segments and the predictor can be compiled; if not, every
            call takes the slow path.
        segments: distinct segments summarised so far.
    """

    def __init__(self, space: Any, predictor: "LatencyPredictor") -> None:
        self.space = space
        self.predictor = predictor
        self.compiled = compilable(space) and SegmentPredictor.supports(predictor)
        self._reset()
        self._signature = getattr(space, "_segment_signature", None)
        # codes only for the very class that writes them: a subclass may change a helper its plan and keys
        # share (a block, a stem) or decline candidates in its keys, which codes it did not write would miss
        coded = self.compiled and all(_definer(space, m) is type(space) for m in ("_segment_codes", "_code_kernels"))
        self._codes_of = space._segment_codes if coded else None
        if not self.compiled:
            logger.info("space %r under %s is not compiled (the space declares no latency segments, or the "
                        "predictor is not a plain LatencyPredictor): predictions list every candidate's kernels",
                        space.name, type(predictor).__name__)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (a space sent to a Ray worker carries its evaluators) without the memo: its tables are
        linked by ``id()``, which another process does not share, and it can be large; it fills again there."""
        return {"space": self.space, "predictor": self.predictor}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["space"], state["predictor"])  # type: ignore[misc]

    def _reset(self) -> None:
        """An empty memo. The memo is a trie over states: one dict per state (what the previous segments
        left), mapping a segment key to (segment id, the dict of the state after it)."""
        self._seg = SegmentPredictor(self.predictor) if self.compiled else None
        self._root: dict[Hashable, tuple[int, dict]] = {}
        self._tables: dict[Any, dict] = {}  # state -> its dict
        self._table_state: dict[int, Any] = {id(self._root): None}
        self._by_kernels: dict[tuple[Kernel, ...], int] = {(): 0}
        self._pending: list[tuple[Kernel, ...]] = []
        self._signed: dict[Hashable, tuple[int, dict]] = {}  # signature -> (segment id, dict of the state after)
        self._codes = _CodeTable()  # code -> segment id

    @property
    def segments(self) -> int:
        """Distinct segments (kernel runs) summarised so far."""
        return len(self._by_kernels) - 1

    def predict(self, candidate: "Candidate", *, genes: bool = True) -> float:
        """Milliseconds of one candidate (see :meth:`predict_many`)."""
        return float(self.predict_many([candidate], genes=genes)[0])

    def predict_many(self, candidates: Sequence["Candidate"], *, genes: bool = True) -> np.ndarray:
        """Milliseconds of each candidate. ``genes``: pass the candidates' genes to the predictor (as the
        search does; only predictors fitted on genes use them), or not (``genes=False``)."""
        candidates = list(candidates)
        space = self.space
        gene_list = [c.genes for c in candidates] if genes else None
        if not self.compiled:
            return self._slow(candidates, gene_list)
        vkey, name = space._validation_key(), space.name
        # each candidate's parts as three lists (no object per candidate: a batch is many thousands)
        arch = [c.genes for c in candidates]
        ratios, bits = [c.prune_ratios for c in candidates], [c.bits for c in candidates]
        for i in [i for i, c in enumerate(candidates) if getattr(c, "_validated_by", None) != vkey or c.space != name]:
            arch[i], ratios[i], bits[i] = space._decode(candidates[i])  # validates (ValueError on a bad candidate)
        coded = self._codes_of(arch, ratios, bits) if self._codes_of is not None and candidates else None
        slow: list[int] = []
        if coded is not None:
            ids, counts = self._coded_ids(*coded)
        else:
            ids, counts, slow = self._keyed_ids(arch, ratios, bits)
        out = self._seg.predict_many(ids, counts, genes=gene_list)  # type: ignore[union-attr]
        if slow:
            out[slow] = self._slow([candidates[i] for i in slow], None if gene_list is None else [gene_list[i] for i in slow])
        return out

    def _keyed_ids(self, arch: list[Any], ratios: list[Any], bits: list[Any]
                   ) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Segment ids and segments per candidate from the space's keys (the trie memo); the candidates the
        space declines (counted 0 here) are listed in the third value."""
        segments_of = self.space._latency_segments
        root, miss = self._root, self._miss
        flat: list[int] = []
        add = flat.append
        lengths: list[int] = []
        slow: list[int] = []
        try:
            for i, keys in enumerate(map(segments_of, arch, ratios, bits)):
                if keys is None:
                    slow.append(i)
                    lengths.append(0)
                    continue
                start = len(flat)
                table = root
                for key in keys:
                    hit = table.get(key)
                    if hit is None:
                        hit = miss(table, key)
                    add(hit[0])
                    table = hit[1]
                lengths.append(len(flat) - start)
        finally:
            self._flush()
        return np.array(flat, dtype=np.intp), np.array(lengths, dtype=np.intp), slow

    def _coded_ids(self, codes: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Segment ids of the space's codes (see the module): known codes from the memo's hash table, the
        new ones listed and summarised in one batch."""
        codes = np.asarray(codes, dtype=np.int64).reshape(-1)
        lengths = np.asarray(lengths, dtype=np.intp).reshape(-1)
        if len(codes) and codes.min() < 0:
            raise ValueError(f"{type(self.space).__name__}._segment_codes gave the code {int(codes.min())}; "
                             "allowed: non-negative int64 codes")
        ids = self._codes.get(codes)
        unknown = np.flatnonzero(ids < 0)
        if len(unknown):
            new, where = np.unique(codes[unknown], return_inverse=True)
            new_ids = np.empty(len(new), dtype=np.intp)
            try:
                for j, code in enumerate(new.tolist()):
                    new_ids[j] = self._sid_of(tuple(self.space._code_kernels(code)))
            finally:
                self._flush()
            self._codes.add(new, new_ids)
            ids[unknown] = new_ids[where.reshape(-1)]
        return ids, lengths

    def _sid_of(self, kernels: tuple[Kernel, ...]) -> int:
        """The segment id of a run of kernels; a new one is summarised by :meth:`_flush`."""
        sid = self._by_kernels.get(kernels)
        if sid is None:
            sid = self._by_kernels[kernels] = len(self._seg) + len(self._pending)  # type: ignore[arg-type]
            self._pending.append(kernels)
        return sid

    def _miss(self, table: dict, key: Hashable) -> tuple[int, dict]:
        """List the kernels of a segment not seen in this state; their summary is computed by :meth:`_flush`."""
        state = self._table_state[id(table)]
        sig = self._signature(key, state) if self._signature is not None else None
        if sig is not None:
            hit = self._signed.get(sig)
            if hit is not None:
                table[key] = hit
                return hit
        after, kernels = self.space._segment_kernels(key, state)
        sid = self._sid_of(tuple(kernels))
        following = self._tables.get(after)
        if following is None:
            following = self._tables[after] = {}
            self._table_state[id(following)] = after
        hit = table[key] = (sid, following)
        if sig is not None:
            self._signed[sig] = hit
        return hit

    def _flush(self) -> None:
        """Summarise the pending segments in one batch (their new kernels predicted together)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        try:
            ids = self._seg.add_many(pending)  # type: ignore[union-attr]
        except BaseException:
            self._reset()  # the memo refers to ids that were never summarised: start again
            raise
        if ids and ids[0] != self._by_kernels[pending[0]]:  # ids are handed out in order; never reached
            raise RuntimeError("CompiledLatency: segment ids out of step with the segment predictor")

    def _slow(self, candidates: list["Candidate"], genes: list[Any] | None) -> np.ndarray:
        return self.predictor.predict_many([self.space.kernels(c) for c in candidates], genes=genes)


class _CodeTable:
    """Non-negative int64 codes -> ids: an open-addressing hash table (linear probing) in numpy arrays,
    looked up and filled a whole array of codes at a time."""

    _EMPTY = -1
    _MULT = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing

    def __init__(self) -> None:
        self._bits = 10
        self._keys = np.full(1 << self._bits, self._EMPTY, dtype=np.int64)
        self._ids = np.zeros(1 << self._bits, dtype=np.intp)
        self._n = 0

    def _slots(self, codes: np.ndarray) -> np.ndarray:
        h = codes.astype(np.uint64) * self._MULT  # wraps around: the point of it
        return (h >> np.uint64(64 - self._bits)).astype(np.intp)

    def get(self, codes: np.ndarray) -> np.ndarray:
        """The id of each code, -1 where the code is not in the table."""
        out = np.full(len(codes), -1, dtype=np.intp)
        todo = np.arange(len(codes))
        slot = self._slots(codes)
        mask = len(self._keys) - 1
        while len(todo):
            found = self._keys[slot]
            hit = found == codes[todo]
            out[todo[hit]] = self._ids[slot[hit]]
            go_on = ~hit & (found != self._EMPTY)
            todo, slot = todo[go_on], (slot[go_on] + 1) & mask
        return out

    def add(self, codes: np.ndarray, ids: np.ndarray) -> None:
        """Insert distinct codes that are not in the table yet."""
        self._n += len(codes)
        if 4 * self._n > len(self._keys):  # keep the load below 1/4: most look-ups end at the first slot
            old = self._keys != self._EMPTY
            codes, ids = np.concatenate([self._keys[old], codes]), np.concatenate([self._ids[old], ids])
            while 4 * self._n > (1 << self._bits):
                self._bits += 1
            self._keys = np.full(1 << self._bits, self._EMPTY, dtype=np.int64)
            self._ids = np.zeros(1 << self._bits, dtype=np.intp)
        mask = len(self._keys) - 1
        slot = self._slots(codes)
        pending = np.arange(len(codes))
        while len(pending):
            s = slot[pending]
            free = self._keys[s] == self._EMPTY
            # of the codes that reach the same free slot, the first takes it; the others probe on
            _, first = np.unique(s[free], return_index=True)
            won = pending[free][first]
            self._keys[slot[won]], self._ids[slot[won]] = codes[won], ids[won]
            lost = np.ones(len(pending), dtype=bool)
            lost[np.flatnonzero(free)[first]] = False
            pending = pending[lost]
            slot[pending] = (slot[pending] + 1) & mask
