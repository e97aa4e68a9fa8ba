"""Canonical Huffman coding of small-alphabet symbol streams, vectorised with numpy (no torch).

A stream is serialised as::

    uint16 alphabet size A | uint8 code length per symbol (A bytes, 0 = unused) | uint32 symbol count n |
    uint32 block size B | uint64 payload bits | uint32 bit offset of every block of B symbols
    (ceil(n / B) values) | payload, packed most significant bit first

The block offsets cost 4 bytes per block (at most 256 blocks a stream) and let the decoder run all blocks in
parallel: numpy decodes one symbol of every block per step, so a stream of n symbols takes about n / 256
vectorised steps instead of n Python steps. Code lengths are limited to :data:`MAX_CODE_BITS`; a longer
optimal code is flattened (frequencies halved, every used symbol kept) until it fits.
"""

from __future__ import annotations

import heapq
import struct

import numpy as np

__all__ = ["MAX_CODE_BITS", "decode", "encode", "code_lengths"]

#: Longest code the coder emits (the decoder's lookup table has 2**MAX_CODE_BITS entries).
MAX_CODE_BITS = 20
#: Most blocks a stream is cut into (each costs a 4-byte offset).
_MAX_BLOCKS = 256
_MIN_BLOCK = 256


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Huffman code lengths (bits) of symbols with ``counts`` occurrences (0 for unused symbols).

    A single used symbol gets length 1. Lengths never exceed :data:`MAX_CODE_BITS`.
    """
    counts = np.asarray(counts, dtype=np.int64)
    used = np.flatnonzero(counts > 0)
    lengths = np.zeros(len(counts), dtype=np.int64)
    if len(used) == 0:
        return lengths
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    freq = counts[used].copy()
    while True:
        heap = [(int(f), i, (i,)) for i, f in enumerate(freq)]
        heapq.heapify(heap)
        depth = np.zeros(len(used), dtype=np.int64)
        tie = len(used)
        while len(heap) > 1:
            fa, _, a = heapq.heappop(heap)
            fb, _, b = heapq.heappop(heap)
            members = a + b
            depth[list(members)] += 1
            heapq.heappush(heap, (fa + fb, tie, members))
            tie += 1
        if depth.max() <= MAX_CODE_BITS:
            lengths[used] = depth
            return lengths
        freq = (freq + 1) // 2  # flatten the distribution; every used symbol keeps a count >= 1


def _canonical(lengths: np.ndarray) -> np.ndarray:
    """Canonical codes (as integers) for ``lengths``: shorter codes first, ties by symbol."""
    codes = np.zeros(len(lengths), dtype=np.int64)
    order = sorted((int(l), s) for s, l in enumerate(lengths) if l > 0)
    code, prev = 0, 0
    for length, sym in order:
        code <<= length - prev
        codes[sym] = code
        code += 1
        prev = length
    return codes


def _block_size(n: int) -> int:
    return max(_MIN_BLOCK, -(-n // _MAX_BLOCKS))


def encode(symbols: np.ndarray, alphabet: int) -> bytes:
    """The serialised Huffman stream of ``symbols`` (integers in ``[0, alphabet)``)."""
    symbols = np.asarray(symbols, dtype=np.int64).reshape(-1)
    if not 1 <= alphabet <= 65535:
        raise ValueError(f"alphabet={alphabet!r} must be in [1, 65535]")
    if symbols.size and (symbols.min() < 0 or symbols.max() >= alphabet):
        raise ValueError(f"symbols must lie in [0, {alphabet}); got [{symbols.min()}, {symbols.max()}]")
    n = int(symbols.size)
    lengths = code_lengths(np.bincount(symbols, minlength=alphabet))
    codes = _canonical(lengths)
    block = _block_size(n)
    sym_len = lengths[symbols]
    ends = np.cumsum(sym_len)
    starts = ends - sym_len
    offsets = starts[::block].astype(np.uint32) if n else np.zeros(0, dtype=np.uint32)
    total = int(ends[-1]) if n else 0
    if total:
        rep_len = np.repeat(sym_len, sym_len)
        rep_code = np.repeat(codes[symbols], sym_len)
        within = np.arange(total, dtype=np.int64) - np.repeat(starts, sym_len)
        bits = ((rep_code >> (rep_len - 1 - within)) & 1).astype(np.uint8)
        payload = np.packbits(bits).tobytes()
    else:
        payload = b""
    head = struct.pack("<H", alphabet) + lengths.astype(np.uint8).tobytes() + struct.pack("<IIQ", n, block, total)
    return head + offsets.tobytes() + payload


def decode(data: bytes | memoryview, offset: int = 0) -> tuple[np.ndarray, int]:
    """Symbols of the stream starting at ``offset`` of ``data``, and the offset just past it."""
    buf = memoryview(data)
    (alphabet,) = struct.unpack_from("<H", buf, offset)
    pos = offset + 2
    lengths = np.frombuffer(buf, dtype=np.uint8, count=alphabet, offset=pos).astype(np.int64)
    pos += alphabet
    n, block, total_bits = struct.unpack_from("<IIQ", buf, pos)
    pos += 16
    n_blocks = -(-n // block) if n else 0
    starts = np.frombuffer(buf, dtype=np.uint32, count=n_blocks, offset=pos).astype(np.int64)
    pos += 4 * n_blocks
    end = pos + (total_bits + 7) // 8
    width = int(lengths.max()) if alphabet else 0
    out = np.empty(n, dtype=np.int64)
    if n == 0:
        return out, end
    codes = _canonical(lengths)
    table_sym = np.zeros(1 << width, dtype=np.int64)
    table_len = np.zeros(1 << width, dtype=np.int64)
    for sym in np.flatnonzero(lengths):
        l = int(lengths[sym])
        lo = int(codes[sym]) << (width - l)
        table_sym[lo:lo + (1 << (width - l))] = sym
        table_len[lo:lo + (1 << (width - l))] = l
    if end > len(buf):
        raise ValueError(f"Huffman stream truncated: needs {end} bytes, has {len(buf)}")
    raw = np.frombuffer(buf, dtype=np.uint8, count=end - pos, offset=pos)
    stream = np.zeros(len(raw) + 8, dtype=np.uint64)
    stream[: len(raw)] = raw
    bitpos = starts.copy()
    counts = np.minimum(block, n - np.arange(n_blocks) * block)
    base = np.arange(n_blocks, dtype=np.int64) * block
    for step in range(int(counts.max())):
        live = counts > step
        if not live.all():
            bitpos, counts, base = bitpos[live], counts[live], base[live]
        byte = bitpos >> 3
        window = (stream[byte] << 24) | (stream[byte + 1] << 16) | (stream[byte + 2] << 8) | stream[byte + 3]
        window = ((window << (bitpos & 7).astype(np.uint64)) & np.uint64(0xFFFFFFFF)) >> np.uint64(32 - width)
        idx = window.astype(np.int64)
        out[base + step] = table_sym[idx]
        bitpos = bitpos + table_len[idx]
    return out, end
