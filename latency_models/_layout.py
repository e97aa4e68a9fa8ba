"""Memory layouts ONNX Runtime's CPU graph optimiser gives a kernel, and what they cost (no torch, no numpy).

At ``ORT_ENABLE_ALL`` on x86 with AVX2 or AVX-512, ONNX Runtime's ``NchwcTransformer`` rewrites float
convolutions (and the pools that follow them) into a channel-blocked layout, NCHWc with blocks of 8 or 16
channels, and inserts ``ReorderInput`` / ``ReorderOutput`` nodes wherever a tensor crosses between that layout
and plain NCHW. In a whole model, consecutive blocked convolutions hand their tensors on with no reorder
(residual adds and ReLUs fuse into them); an operator that has no blocked kernel (channel split, channel
shuffle, concatenation, the excitation's ``Mul``, a grouped convolution that is not depthwise) costs a reorder
of its input and one of its output. A kernel timed alone pays both reorders every time. So:

- :func:`standalone_reorder_mbytes`: the megabytes a blocked kernel's stand-alone graph reorders, which the same
  kernel inside a model mostly does not (the predictor fits one shared cost per megabyte);
- :func:`layout_state`: the layout a kernel leaves its output in, as a *state* for the predictor's transition
  costs (the bit-width changes between layers): ``BLOCKED`` (32) for blocked float32 kernels, ``PLAIN`` (33)
  for float32 kernels that need NCHW, the bit width for float16 and quantised weight layers, 0 for kernels that
  run in whatever layout they are given (adds, activations) and for other float16 or quantised kernels. The costs of ``32>33`` and ``33>32`` are the reorders.
  With ``float16_layout`` a float16 layer takes a float32 layer's state instead: ONNX Runtime has no float16
  convolution on x86 and runs it as float32, its casts removed.
  An 8-bit max pool has a state of its own, ``INT8_POOL`` (9), blocked layout or not: ONNX Runtime runs it on
  uint8 channels-last (``NhwcMaxPool``, about as fast as a float pool) when it reads an int8 convolution's
  output (``QLinearConv`` runs channels-last and its layout is carried through the pool), and with its generic
  NCHW uint8 ``MaxPool`` otherwise, 10-20x slower than a float pool (``experiments/int8_maxpool.py``): the
  transitions into the pool price which of the two runs.

The rule follows the transformer's source (a float convolution is blocked when it is dense with fewer input
channels than the block or a multiple of the alignment; depthwise with a multiple of the alignment; grouped with
a multiple of the block per group on both sides; a pool with a multiple of the block) and is checked against the installed ONNX Runtime's optimised graphs by
the tests. :func:`nchwc_layout` asks the installed ONNX Runtime for the block size and the channel alignment (None: no
blocked layout, e.g. on ARM); :func:`~latency_models.device_info` records them with every table measured here.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile

from latency_models._kernel import INT_BITS, Kernel

__all__ = ["BLOCKED", "INT8_POOL", "PLAIN", "layout_state", "nchwc_layout", "plain_path", "standalone_reorder_mbytes"]

#: Layout state of float kernels in ONNX Runtime's channel-blocked layout (the float32 bit width: a model's
#: input state, so a first convolution that reads the NCHW input directly costs no change).
BLOCKED = 32
#: Layout state of float kernels that need plain NCHW.
PLAIN = 33
#: Layout state of a max pool at 8 bits (see the module's docstring). Measured on this CPU in the held-out
#: ShuffleNet models of a 128-px profile (``experiments/results/int8_pool_state.md``, ONNX Runtime's profiler): the
#: 8-bit stem pool ran as ``MaxPool`` in 0.14-0.43 ms (8 to 24 x 64 x 64) after a float32, float16 or int4
#: convolution and as ``NhwcMaxPool`` in 0.014-0.018 ms after an int8 one; read as layout-transparent, the
#: predictor missed two such models by -15 and -17 %.
INT8_POOL = 9
#: Operators that run in whatever layout their input has.
_FOLLOWERS = frozenset({"add", "act"})
_POOLS = frozenset({"maxpool", "avgpool", "global_avgpool"})


def _blocked(k: Kernel, nchwc: tuple[int, int]) -> bool:
    """Whether ONNX Runtime runs the float kernel ``k`` in the channel-blocked layout."""
    block, align = nchwc
    if k.op == "conv":
        cin = k.input_shape[0]
        cout = k.out_channels or cin
        if k.groups == 1:
            return cin < block or cin % align == 0
        if k.groups == cin == cout:  # depthwise
            return cout % align == 0
        return (cin // k.groups) % block == 0 and (cout // k.groups) % block == 0
    if k.op in _POOLS:  # pools are blocked on whole blocks only
        return k.input_shape[0] % block == 0
    return False


def layout_state(k: Kernel, nchwc: tuple[int, int] | None, *, int8_pool: bool = True,
                 float16_layout: bool = False) -> int:
    """The layout state ``k`` leaves its output in (see the module's docstring); 0: layout-transparent.

    ``nchwc``: (block, channel alignment) of the device (:func:`nchwc_layout`). Without one (None: no blocked
    layout on the device) a weight layer's state is its bit width, an 8-bit max pool's :data:`INT8_POOL`, and
    every other kernel is transparent. ``int8_pool=False``: 8-bit max pools are transparent too (as predictors
    fitted before they had a state of their own read them). ``float16_layout``: on a device with a blocked layout,
    a float16 layer takes the state a float32 one of its shape would (:data:`BLOCKED` or :data:`PLAIN`), not 16:
    ONNX Runtime has no float16 convolution on x86 (the only CPUs it blocks on), so it casts the weights to float32
    once, drops the casts around the layer and runs it as float32, in that layout (read from its optimised graphs).
    """
    weight = k.op in ("conv", "linear")
    if int8_pool and k.op == "maxpool" and k.bits in INT_BITS:
        return INT8_POOL
    if float16_layout and nchwc and k.bits == 16:
        return (BLOCKED if _blocked(k, nchwc) else PLAIN) if weight else 0
    if not nchwc or k.bits != 32:  # quantised and float16 layers keep their bits (their casts and quantisers
        return k.bits if weight else 0  # are the transitions that matter; QLinearConv runs NHWC)
    if k.op in _FOLLOWERS:
        return 0
    return BLOCKED if _blocked(k, nchwc) else PLAIN


def plain_path(k: Kernel, nchwc: tuple[int, int] | None) -> bool:
    """Whether ``k`` is a float convolution or pool that the blocking device ``nchwc`` runs on its plain NCHW
    path (not blocked: a separate, often slower implementation); False without a blocked layout."""
    return bool(nchwc) and k.bits in (16, 32) and k.op in ("conv", "maxpool", "avgpool") and not _blocked(k, nchwc)


def whole_blocks(channels: int, block: int) -> int:
    """``channels`` rounded up to whole blocks of ``block``, as the blocked layout stores them (116 -> 128 on 16)."""
    return -(-int(channels) // block) * block


def standalone_reorder_mbytes(k: Kernel, nchwc: tuple[int, int] | None) -> float:
    """Megabytes the stand-alone graph of a blocked float kernel reorders (its input unless a dense
    convolution reads the NCHW input directly, and its output padded to whole blocks); 0 otherwise."""
    if not nchwc or k.bits not in (16, 32) or not _blocked(k, nchwc):
        return 0.0
    block = nchwc[0]
    skip_input = k.op == "conv" and k.groups == 1 and k.input_shape[0] < block
    n_in = 0 if skip_input else whole_blocks(k.input_shape[0], block) * math.prod(k.input_shape[1:])
    out_shape = k.output_shape  # (C, H, W), or (C,) after global pooling
    out = whole_blocks(out_shape[0], block) * math.prod(out_shape[1:])
    return 4.0 * (n_in + out) / 1e6


@functools.lru_cache(maxsize=1)
def nchwc_layout() -> tuple[int, int] | None:
    """ONNX Runtime's channel-blocked layout on this machine as (block, channel alignment), or None.

    The block is 8 with AVX2 and 16 with AVX-512; a dense convolution with fewer input channels reads plain
    NCHW directly. The alignment is the channel multiple a blocked convolution needs (4 in recent versions,
    which pad to whole blocks; the block in older ones). Both are read from the optimised graphs of two or
    three one-convolution models; None when the installed ONNX Runtime does not block (no NCHWc kernels for
    this CPU, or no ONNX Runtime).
    """
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        return None
    from latency_models._microgen import kernel_graph

    def nodes(channels: int) -> list[str]:
        graph = kernel_graph(Kernel(op="conv", input_shape=(channels, 4, 4), out_channels=channels, kernel_size=1))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "optimised.onnx")
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.optimized_model_filepath = path
            opts.log_severity_level = 3
            opts.intra_op_num_threads = 1
            ort.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            return [n.op_type for n in onnx.load(path).graph.node if n.domain == "com.microsoft.nchwc"]

    try:
        for block in (4, 8, 16, 32):  # the input is reordered from the block size on
            if "ReorderInput" in nodes(block):
                break
        else:
            return None
        align = 4 if block > 4 and nodes(block + 4) else block
    except Exception:  # an ONNX Runtime without the CPU provider, an unwritable temp dir: no layout terms
        return None
    return block, align
