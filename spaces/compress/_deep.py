"""Deep Compression (Han, Mao and Dally, ICLR 2016): prune, share weights, entropy-code, store.

1. Pruning: unstructured (:func:`spaces.compress.prune_unstructured`, :func:`spaces.compress.gradual_prune`)
   or structured (:func:`spaces.compress.prune_structured`); zeros stay zero below.
2. Trained weight sharing (:func:`share_weights`): per ``Conv2d``/``Linear`` layer, 1-D k-means of the
   surviving (non-zero) weights into ``2**bits`` shared values, initialised linearly between the smallest
   and largest weight (the paper's best initialisation). The layer then computes its weight as
   ``centroids[index]`` (zeros kept), so training the model trains the centroids: each centroid's gradient
   is the sum of the gradients of the weights that share it (the paper's trained quantisation).
   :func:`strip_sharing` turns the layers back into plain ones holding the shared values.
3. Storage (:func:`save_compressed`, :func:`load_compressed`): one file, never a pickle::

       b"KARUMIDC" | uint32 header length | JSON header | binary sections

   The header (``format_version``, per state-dict entry its name, shape, dtype, encoding and section
   offsets) is JSON; the sections are little-endian binary. Each float32 ``weight`` takes the smallest of
   these exact encodings: a codebook (at most 256 distinct non-zero values, float32) with Huffman-coded
   indices, for every entry or only for the non-zero ones; the non-zero values themselves; raw. Non-zero
   entries are located by Huffman-coded relative positions (the zeros skipped before each entry, 0-254;
   symbol 255 skips 255 zeros without an entry, the paper's filler); an all-zero weight takes no bytes.
   Layers given 16 bits store float16 values; every other tensor is stored raw at its dtype. :func:`load_compressed` restores the
   state dict exactly (bit for bit, float16 layers at their float16 values).

:func:`compressed_size_bytes` is the size of that file for a model at given per-layer bits: what a model of
the search would take stored this way (weight sharing at ``2**bits`` values for bits <= 8, float16 at 16,
float32 at 32), next to the dense ``size_bytes`` of its kernels.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import struct
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from spaces.compress import _huffman

if TYPE_CHECKING:
    import torch

__all__ = [
    "SHARE_BITS",
    "compressed_size_bytes",
    "compression_report",
    "load_compressed",
    "save_compressed",
    "share_weights",
    "shared_layers",
    "strip_sharing",
]

logger = logging.getLogger(__name__)

#: Bit widths of weight sharing: a layer gets at most ``2**bits`` shared values.
SHARE_BITS = (1, 2, 3, 4, 5, 6, 7, 8)
FORMAT_VERSION = 1
MAGIC = b"KARUMIDC"
#: Most distinct non-zero values a weight may have to be stored with a codebook.
_MAX_CODEBOOK = 256
#: Relative-position symbol that skips this many zeros without an entry.
_SKIP = 255
_KMEANS_ITERATIONS = 30


# ----------------------------------------------------------------------------------------------------------
# weight sharing
def _kmeans_1d(values: np.ndarray, k: int, iterations: int) -> np.ndarray:
    """Sorted float32 centroids of 1-D k-means with linear initialisation (empty clusters dropped)."""
    distinct = np.unique(values)
    if len(distinct) <= k:
        return distinct.astype(np.float32)
    c = np.linspace(float(values.min()), float(values.max()), k)
    for _ in range(iterations):
        labels = np.searchsorted((c[1:] + c[:-1]) / 2, values)
        counts = np.bincount(labels, minlength=k)
        sums = np.bincount(labels, weights=values, minlength=k)
        new = np.where(counts > 0, sums / np.maximum(counts, 1), c)
        if np.allclose(new, c, rtol=0, atol=1e-9 * max(1.0, float(np.abs(c).max()))):
            c = new
            break
        c = new
    labels = np.searchsorted((c[1:] + c[:-1]) / 2, values)
    return np.unique(c[np.unique(labels)].astype(np.float32))


def _nearest(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    if len(centroids) == 1:
        return np.zeros(len(values), dtype=np.int64)
    return np.searchsorted((centroids[1:].astype(np.float64) + centroids[:-1]) / 2, values)


class _SharedWeight:
    """Forward pre-hook of a shared layer: ``weight = where(mask, centroids[index], 0)`` (differentiable in
    the centroids; the gradient of a centroid sums the gradients of its weights)."""

    def __call__(self, module: "torch.nn.Module", inputs: Any) -> None:
        module.weight = _gather(module)


class _DetachWeight:
    """Forward hook of a shared layer: keep a detached ``weight`` between calls (autograd holds the graph),
    so the model can be deep-copied at any time."""

    def __call__(self, module: "torch.nn.Module", inputs: Any, output: Any) -> None:
        module.weight = module.weight.detach()


def _gather(module: "torch.nn.Module") -> "torch.Tensor":
    import torch

    values = module.weight_centroids[module.weight_index.long()]
    return torch.where(module.weight_mask, values, torch.zeros((), dtype=values.dtype))


def _layers(model: "torch.nn.Module") -> dict[str, "torch.nn.Module"]:
    import torch

    return {n: m for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}


def shared_layers(model: "torch.nn.Module") -> dict[str, int]:
    """Qualified names of the weight-shared layers of ``model``, mapped to their number of shared values."""
    return {n: int(m.weight_centroids.numel()) for n, m in model.named_modules() if hasattr(m, "weight_centroids")}


def share_weights(model: "torch.nn.Module", bits: "int | Mapping[str, int]", *,
                  iterations: int = _KMEANS_ITERATIONS) -> "torch.nn.Module":
    """A copy of ``model`` whose layers share ``2**bits`` weight values each (trainable centroids).

    Args:
        model: any model; its ``Conv2d``/``Linear`` layers are shared. Not modified.
        bits: one number for every such layer, or per qualified layer name (layers not named are left
            alone); each in :data:`SHARE_BITS`.
        iterations: Lloyd iterations of the k-means (it stops earlier when the centroids no longer move).

    Zero weights (pruned) stay exactly zero and are not clustered. A layer with fewer distinct non-zero
    weights than ``2**bits`` keeps them exactly. The returned model's shared layers hold parameters
    ``weight_centroids`` and buffers ``weight_index`` / ``weight_mask`` instead of ``weight``; train it as
    usual (the centroids are fine-tuned by gradient), then :func:`strip_sharing` before exporting.
    """
    import torch

    layers = _layers(model)
    if isinstance(bits, Mapping):
        for name, b in bits.items():
            if name not in layers:
                raise ValueError(f"bits names {name!r}, which is not a Conv2d or Linear of the model")
        wanted = dict(bits)
    else:
        wanted = {name: bits for name in layers}
    for name, b in wanted.items():
        if isinstance(b, bool) or b not in SHARE_BITS:
            raise ValueError(f"bits[{name!r}]={b!r} is not supported; allowed: {', '.join(map(str, SHARE_BITS))}")
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations={iterations!r} must be a positive integer")
    shared = copy.deepcopy(model)
    modules = _layers(shared)
    for name, b in wanted.items():
        m = modules[name]
        if hasattr(m, "weight_centroids"):
            raise ValueError(f"layer {name!r} is already shared; strip_sharing(model) first")
        w = m.weight.detach().cpu().numpy().astype(np.float64).reshape(-1)
        mask = w != 0
        nonzero = w[mask]
        centroids = _kmeans_1d(nonzero, 2 ** int(b), iterations) if nonzero.size else np.zeros(1, np.float32)
        index = np.zeros(w.size, dtype=np.int64)
        index[mask] = _nearest(nonzero, centroids)
        shape, device = m.weight.shape, m.weight.device
        del m.weight
        m.weight_centroids = torch.nn.Parameter(torch.from_numpy(centroids).to(device))
        m.register_buffer("weight_index", torch.from_numpy(index.astype(np.int16 if b <= 8 else np.int64))
                          .reshape(shape).to(device))
        m.register_buffer("weight_mask", torch.from_numpy(mask).reshape(shape).to(device))
        m.weight = _gather(m).detach()
        m.register_forward_pre_hook(_SharedWeight())
        m.register_forward_hook(_DetachWeight())
    return shared


def strip_sharing(model: "torch.nn.Module") -> "torch.nn.Module":
    """Turn every shared layer back into a plain one whose ``weight`` holds the shared values; in place."""
    import torch

    for m in model.modules():
        if not hasattr(m, "weight_centroids"):
            continue
        with torch.no_grad():
            weight = _gather(m).detach().clone()
        for hooks in (m._forward_pre_hooks, m._forward_hooks):
            for key, hook in list(hooks.items()):
                if isinstance(hook, (_SharedWeight, _DetachWeight)):
                    del hooks[key]
        del m.weight_centroids
        del m.weight_index
        del m.weight_mask
        if "weight" in m.__dict__:
            del m.__dict__["weight"]
        m.weight = torch.nn.Parameter(weight)
    return model


# ----------------------------------------------------------------------------------------------------------
# the file
def _state(model: "torch.nn.Module") -> dict[str, "torch.Tensor"]:
    if not shared_layers(model):
        return model.state_dict()
    return strip_sharing(copy.deepcopy(model)).state_dict()


def _np_dtype(t: "torch.Tensor") -> np.dtype:
    return t.detach().cpu().numpy().dtype


def _gap_symbols(mask: np.ndarray) -> np.ndarray:
    """Relative positions of the non-zero entries: zeros skipped before each (symbol 255 = skip 255, no entry)."""
    gaps = np.diff(np.flatnonzero(mask), prepend=-1) - 1
    skips = gaps // _SKIP
    rest = gaps - skips * _SKIP
    if not skips.any():
        return rest
    reps = skips + 1
    symbols = np.full(int(reps.sum()), _SKIP, dtype=np.int64)
    symbols[np.cumsum(reps) - 1] = rest
    return symbols


def _positions(symbols: np.ndarray) -> np.ndarray:
    skip = symbols == _SKIP
    return np.cumsum(np.where(skip, _SKIP, symbols + 1))[~skip] - 1


def _encode_float(values: np.ndarray, half: bool) -> tuple[dict[str, Any], bytes]:
    """The smallest exact encoding of a float32 array (float16 values when ``half``): all zeros; a codebook
    (at most 256 distinct non-zero values) indexed densely or at the non-zero positions only; the values at
    the non-zero positions; or raw."""
    flat = values.reshape(-1).astype(np.float16 if half else np.float32)
    dtype = "<f2" if half else "<f4"
    mask = flat != 0
    if not mask.any():
        return {"encoding": "zeros"}, b""
    options: list[tuple[dict[str, Any], bytes]] = [({"encoding": "float16" if half else "raw"}, flat.astype(dtype).tobytes())]
    nonzero = flat[mask]
    sparse = (~mask).any()
    gaps = _huffman.encode(_gap_symbols(mask), _SKIP + 1) if sparse else b""
    if sparse:
        options.append(({"encoding": "sparse", "values": dtype, "nonzero": int(nonzero.size)},
                        nonzero.astype(dtype).tobytes() + gaps))
    codebook = np.unique(nonzero)
    if len(codebook) <= _MAX_CODEBOOK:
        book = codebook.astype(dtype)
        idx = np.searchsorted(codebook, nonzero)
        options.append(({"encoding": "codebook_sparse", "values": dtype, "codebook_size": int(len(book))},
                        book.tobytes() + _huffman.encode(idx, len(book)) + gaps) if sparse else
                       ({"encoding": "codebook_dense", "values": dtype, "codebook_size": int(len(book))},
                        book.tobytes() + _huffman.encode(idx, len(book))))
        if sparse and len(codebook) < _MAX_CODEBOOK:
            dense_book = np.unique(np.concatenate([codebook, np.zeros(1, codebook.dtype)]))
            options.append(({"encoding": "codebook_dense", "values": dtype, "codebook_size": int(len(dense_book))},
                             dense_book.astype(dtype).tobytes()
                             + _huffman.encode(np.searchsorted(dense_book, flat), len(dense_book))))
    return min(options, key=lambda o: len(o[1]))


def _decode_float(meta: Mapping[str, Any], data: memoryview, offset: int, size: int) -> np.ndarray:
    enc = meta["encoding"]
    if enc == "zeros":
        return np.zeros(size, dtype=np.float32)
    if enc in ("raw", "float16"):
        return np.frombuffer(data, dtype="<f2" if enc == "float16" else "<f4", count=size, offset=offset).astype(np.float32)
    dtype = np.dtype(meta["values"])
    if enc == "sparse":
        n = int(meta["nonzero"])
        values = np.frombuffer(data, dtype=dtype, count=n, offset=offset)
        symbols, _ = _huffman.decode(data, offset + n * dtype.itemsize)
        out = np.zeros(size, dtype=np.float32)
        out[_positions(symbols)] = values
        return out
    k = int(meta["codebook_size"])
    codebook = np.frombuffer(data, dtype=dtype, count=k, offset=offset).astype(np.float32)
    idx, pos = _huffman.decode(data, offset + k * dtype.itemsize)
    if enc == "codebook_dense":
        return codebook[idx]
    symbols, _ = _huffman.decode(data, pos)
    out = np.zeros(size, dtype=np.float32)
    out[_positions(symbols)] = codebook[idx]
    return out


def _serialise(state: Mapping[str, "torch.Tensor"], half: set[str]) -> bytes:
    import torch

    entries, sections, offset = [], [], 0
    for name, tensor in state.items():
        t = tensor.detach().cpu()
        entry: dict[str, Any] = {"name": name, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
        layer, _, attr = name.rpartition(".")
        if t.dtype == torch.float32 and attr == "weight":
            meta, blob = _encode_float(t.numpy(), layer in half)
            entry.update(meta)
        else:
            entry["encoding"] = "raw"
            arr = t.numpy()
            blob = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        entry["offset"], entry["nbytes"] = offset, len(blob)
        offset += len(blob)
        entries.append(entry)
        sections.append(blob)
    header = json.dumps({"format_version": FORMAT_VERSION, "tensors": entries}, separators=(",", ":")).encode()
    return MAGIC + struct.pack("<I", len(header)) + header + b"".join(sections)


def save_compressed(model: "torch.nn.Module", path: "str | os.PathLike[str] | None" = None, *,
                    half_layers: "set[str] | frozenset[str] | tuple[str, ...]" = ()) -> bytes:
    """The Deep Compression file of ``model``'s state dict (see the module docstring); writes ``path``.

    ``model`` may be shared (:func:`share_weights`) or plain: any ``Conv2d``/``Linear`` weight with at most
    256 distinct non-zero values is codebook-coded, the rest is stored raw. ``half_layers`` names layers
    whose weights are stored as float16 (16-bit layers). Returns the bytes written.
    """
    data = _serialise(_state(model), set(half_layers))
    if path is not None:
        with open(path, "wb") as f:
            f.write(data)
    return data


def load_compressed(source: "str | os.PathLike[str] | bytes") -> dict[str, "torch.Tensor"]:
    """The state dict stored by :func:`save_compressed` (a path or the bytes), bit for bit."""
    import torch

    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        with open(source, "rb") as f:
            data = f.read()
    if data[: len(MAGIC)] != MAGIC:
        raise ValueError("source is not a karumi Deep Compression file (bad magic bytes)")
    (hlen,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    try:
        header = json.loads(data[start:start + hlen])
    except json.JSONDecodeError as exc:
        raise ValueError(f"Deep Compression header is malformed: {exc}") from None
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"format_version={header.get('format_version')!r} is not supported; allowed: {FORMAT_VERSION}")
    body = memoryview(data)[start + hlen:]
    state: dict[str, torch.Tensor] = {}
    for e in header["tensors"]:
        shape, size = tuple(e["shape"]), int(np.prod(e["shape"], dtype=np.int64))
        dtype = getattr(torch, e["dtype"])
        if e["encoding"] == "raw" and e["dtype"] != "float32":
            np_dtype = torch.empty(0, dtype=dtype).numpy().dtype.newbyteorder("<")
            arr = np.frombuffer(body, dtype=np_dtype, count=size, offset=e["offset"])
        elif e["encoding"] in ("raw", "zeros", "float16", "sparse", "codebook_dense", "codebook_sparse"):
            arr = _decode_float(e, body, e["offset"], size)
        else:
            raise ValueError(f"tensor {e['name']!r} has an unknown encoding {e['encoding']!r}")
        state[e["name"]] = torch.from_numpy(np.array(arr, dtype=arr.dtype.newbyteorder("="))).reshape(shape).to(dtype)
    return state


def compression_report(model: "torch.nn.Module", *, half_layers: "tuple[str, ...] | set[str]" = ()) -> dict[str, Any]:
    """``file_bytes`` of :func:`save_compressed`, ``float32_bytes`` (the state dict at 4 bytes per
    floating-point value, other dtypes at their size), their ``ratio``, and per tensor its ``encoding`` and
    ``bytes``."""
    data = save_compressed(model, half_layers=half_layers)
    (hlen,) = struct.unpack_from("<I", data, len(MAGIC))
    header = json.loads(data[len(MAGIC) + 4: len(MAGIC) + 4 + hlen])
    state = _state(model)
    dense = sum(4 * t.numel() if t.is_floating_point() else t.numel() * t.element_size() for t in state.values())
    return {
        "file_bytes": len(data),
        "header_bytes": hlen + len(MAGIC) + 4,
        "float32_bytes": int(dense),
        "ratio": dense / len(data),
        "tensors": {e["name"]: {"encoding": e["encoding"], "bytes": e["nbytes"]} for e in header["tensors"]},
    }


def compressed_size_bytes(model: "torch.nn.Module", module_bits: "Mapping[str, int] | None" = None) -> int:
    """Bytes of the Deep Compression file of ``model`` at per-layer ``module_bits``.

    Layers at 1-8 bits share ``2**bits`` values (k-means, no training), 16-bit layers are stored as float16,
    32-bit layers (and layers not named) as they are; zeros are stored sparsely where that is smaller.
    ``model`` is not modified. Deterministic: the same model and bits give the same number.
    """
    bits = dict(module_bits or {})
    layers = _layers(model)
    for name, b in bits.items():
        if name not in layers:
            raise ValueError(f"module_bits names {name!r}, which is not a Conv2d or Linear of the model")
        if isinstance(b, bool) or (b not in SHARE_BITS and b not in (16, 32)):
            raise ValueError(f"module_bits[{name!r}]={b!r} is not supported; allowed: 1-8, 16, 32")
    share = {n: b for n, b in bits.items() if b in SHARE_BITS and not hasattr(layers[n], "weight_centroids")}
    plain = _plain(model)
    shared = share_weights(plain, share) if share else plain
    return len(save_compressed(shared, half_layers={n for n, b in bits.items() if b == 16}))


def _plain(model: "torch.nn.Module") -> "torch.nn.Module":
    """``model`` with fake quantisation and sharing removed (a copy where anything had to change)."""
    return strip_sharing(copy.deepcopy(model)) if shared_layers(model) else model

