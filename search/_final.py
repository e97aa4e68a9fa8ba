"""The selected candidate made deployable: final distillation fine-tune, test evaluation, ONNX export.

Writes ``best/model.onnx`` (quantised as the candidate says, through ``space.onnx``),
``best/model_fp32.onnx`` (the same trained weights, float32), ``best/model_state.pt`` (the float state dict
of ``space.build(candidate)``, load it with ``weights_only=True``) and ``best/candidate.json``. The ONNX
model's accuracy on the test split is computed with ONNX Runtime, and on a local device its latency is
measured with the same protocol as the latency table (``latency_models.measure_onnx``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import time
from typing import TYPE_CHECKING, Any

from latency_models import measure_onnx
from search._proxy import ProxyEvaluator
from search._train import accuracy, top1_accuracy

if TYPE_CHECKING:
    import numpy as np
    import torch

    from search._data import DataSet, Split
    from spaces import Candidate, SearchSpace

__all__ = ["FinalModel", "finalize", "onnx_accuracy", "onnx_logits"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class FinalModel:
    """The deployable model and its numbers.

    Attributes:
        candidate: what was fine-tuned.
        test_accuracy: accuracy of the fine-tuned (fake-quantised) PyTorch model on the test split.
        onnx_test_accuracy: accuracy of ``best/model.onnx`` in ONNX Runtime on the test split.
        fp32_onnx_test_accuracy: accuracy of ``best/model_fp32.onnx`` on the test split.
        latency_ms: predicted latency, milliseconds.
        measured_latency_ms: ``best/model.onnx`` measured on this machine (None unless the device is local).
        measured_fp32_latency_ms: ``best/model_fp32.onnx`` measured on this machine (local device only).
        size_bytes: stored weights at the candidate's bits, bytes.
        onnx_bytes: size of the ``best/model.onnx`` file, bytes.
        files: the files written, by role.
        seconds: wall time of fine-tune, export and measurements.
    """

    candidate: "Candidate"
    test_accuracy: float
    onnx_test_accuracy: float
    fp32_onnx_test_accuracy: float
    latency_ms: float
    measured_latency_ms: float | None
    measured_fp32_latency_ms: float | None
    size_bytes: int
    onnx_bytes: int
    files: dict[str, str]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["candidate"] = self.candidate.to_dict()
        return d


def onnx_logits(path: str | pathlib.Path, x: "torch.Tensor | np.ndarray", *, batch_size: int = 256) -> "np.ndarray":
    """Logits of the ONNX model at ``path`` on inputs ``x`` (N, C, H, W), run one sample at a time in
    batches of the exported batch size (1) when the graph has a fixed batch of 1."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    arr = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
    arr = arr.astype(np.float32, copy=False)
    fixed_one = isinstance(inp.shape[0], int) and inp.shape[0] == 1
    step = 1 if fixed_one else batch_size
    outs = [sess.run(None, {inp.name: arr[i:i + step]})[0] for i in range(0, len(arr), step)]
    return np.concatenate(outs, axis=0)


def onnx_accuracy(path: str | pathlib.Path, split: "Split") -> float:
    """Top-1 accuracy of the ONNX model at ``path`` on ``split`` in ONNX Runtime, a fraction."""
    return top1_accuracy(onnx_logits(path, split.x), split.y)


def finalize(candidate: "Candidate", *, space: "SearchSpace", data: "DataSet", teacher: "torch.nn.Module",
             out_dir: str | pathlib.Path, epochs: int, latency_ms: float, measure: bool, seed: int = 0,
             threads: int = 1, proxy_options: dict[str, Any] | None = None) -> FinalModel:
    """Fine-tune ``candidate`` by distillation on the whole training split, evaluate it, export it.

    Args:
        candidate: the selected candidate.
        space: its space (builds the model, names its quantised layers).
        data: the data set (train for the fine-tune, test for the evaluations).
        teacher: the teacher (its logits on the training split are computed once).
        out_dir: the run folder; files go to ``out_dir/best``.
        epochs: distillation epochs (0: the candidate's weights are only calibrated).
        latency_ms: its predicted latency (reported as is).
        measure: re-measure the exported models on this machine (the device is local).
        proxy_options: batch size, learning rate, temperature, alpha of the distillation.
    """
    import torch

    start = time.perf_counter()
    best = pathlib.Path(out_dir) / "best"
    best.mkdir(parents=True, exist_ok=True)
    bits = space.module_bits(candidate)
    opts = dict(proxy_options or {})
    tuner = ProxyEvaluator(data.train, data.val, teacher, epochs=epochs, seed=seed, threads=threads, **opts)
    trained = tuner.fine_tune(space.build(candidate), bits, epochs=epochs)

    test_acc = accuracy(trained, data.test)
    files = {
        "onnx": str(best / "model.onnx"),
        "onnx_fp32": str(best / "model_fp32.onnx"),
        "state_dict": str(best / "model_state.pt"),
        "candidate": str(best / "candidate.json"),
    }
    calib = [data.train.x[i:i + 64] for i in range(0, min(len(data.train), 512), 64)]
    space.onnx(candidate, model=trained, calibration=calib, path=files["onnx"])

    # the float model: the trained weights (parameter names are kept by prepare_qat) in a fresh build
    fp32 = space.build(candidate)
    trained_state = trained.state_dict()
    own = fp32.state_dict()
    shared = {k: v for k, v in trained_state.items() if k in own and own[k].shape == v.shape}
    missing = sorted(set(own) - set(shared))
    if missing:
        logger.warning("float export: %d tensors not found in the fine-tuned model (e.g. %s)", len(missing), missing[0])
    fp32.load_state_dict(shared, strict=False)
    fp32.eval()
    float_candidate = dataclasses.replace(candidate, bits=(32,) * len(candidate.bits))
    space.onnx(float_candidate, model=fp32, path=files["onnx_fp32"])
    torch.save(fp32.state_dict(), files["state_dict"])
    pathlib.Path(files["candidate"]).write_text(candidate.to_json(indent=2) + "\n", encoding="utf-8")

    onnx_acc = onnx_accuracy(files["onnx"], data.test)
    fp32_acc = onnx_accuracy(files["onnx_fp32"], data.test)
    measured = measured_fp32 = None
    if measure:
        measured = float(measure_onnx(files["onnx"], threads=threads))
        measured_fp32 = float(measure_onnx(files["onnx_fp32"], threads=threads))
    result = FinalModel(
        candidate=candidate, test_accuracy=test_acc, onnx_test_accuracy=onnx_acc, fp32_onnx_test_accuracy=fp32_acc,
        latency_ms=float(latency_ms), measured_latency_ms=measured, measured_fp32_latency_ms=measured_fp32,
        size_bytes=int(space.stats(candidate).size_bytes), onnx_bytes=pathlib.Path(files["onnx"]).stat().st_size,
        files=files, seconds=time.perf_counter() - start,
    )
    (best / "final.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    return result
