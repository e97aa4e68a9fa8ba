"""The selected candidate made deployable: final distillation fine-tune, test evaluation, ONNX export.

Writes into ``best/``: ``model.onnx`` (the file to deploy), ``model_fp32.onnx`` (the same trained weights in
float32) and, when the candidate has quantised layers, ``model_quantized.onnx`` (QDQ int8/int4, float16 as
its bits say, through ``space.onnx``); ``preprocess.json`` and ``predict.py`` (how to feed it images, with
ONNX Runtime alone); ``model_state.pt`` (the float state dict of ``space.build(candidate)``, load it with
``weights_only=True``), ``candidate.json`` and ``final.json``. Every ONNX file takes images in [0, 1] and
standardises them inside its graph (``search._deploy``).

``model.onnx`` is the quantised export only when it is faster than the float one on the device: measured
side by side here when the device is this machine, predicted otherwise. A quantised model slower than its
own float export (int4 and float16 layers on an x86 CPU, or quantise/dequantise steps that cost more than
they save) is not shipped as the deployable model; ``final.json`` and the report say which file was chosen
and why. Test accuracies are computed from the [0, 1] images in ONNX Runtime, as a user would.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import shutil
import time
from typing import TYPE_CHECKING, Any, Sequence

from latency_models import PROTOCOL_NAME, cpu_name, measure_interleaved
from search._deploy import raw_images, with_preprocessing, write_contract
from search._objective import predict_latency
from search._proxy import ProxyEvaluator
from search._train import accuracy, top1_accuracy
from spaces.compress import activation_sparsity, compressed_size_bytes

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import torch

    from latency_models import LatencyPredictor
    from search._data import DataSet, Split
    from spaces import Candidate, SearchSpace

__all__ = ["FinalModel", "deployable_onnx", "finalize", "measure_side_by_side", "measurement_description",
           "onnx_accuracy", "onnx_logits"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class FinalModel:
    """The deployable model and its numbers.

    Attributes:
        candidate: what was fine-tuned.
        shipped: which export ``best/model.onnx`` is: ``"quantized"`` or ``"float32"``.
        shipped_reason: one sentence saying why.
        test_accuracy: accuracy of the fine-tuned (fake-quantised) PyTorch model on the test split.
        val_accuracy: the same on the validation split (comparable with the teacher's and the proxy's).
        onnx_test_accuracy: accuracy of ``best/model.onnx`` in ONNX Runtime on the test split.
        fp32_onnx_test_accuracy: accuracy of ``best/model_fp32.onnx`` on the test split.
        quantized_onnx_test_accuracy: accuracy of ``best/model_quantized.onnx`` (None for a float candidate).
        latency_ms: predicted latency of the shipped model, milliseconds.
        measured_latency_ms: ``best/model.onnx`` measured on this machine (None unless the device is local).
        measured_fp32_latency_ms: ``best/model_fp32.onnx`` measured on this machine (local device only).
        measured_quantized_latency_ms: ``best/model_quantized.onnx`` measured here (local, quantised only).
        measured_teacher_latency_ms: ``teacher.onnx`` measured side by side with them (local device only).
        size_bytes: stored weights of the shipped model, bytes (dense, at its layers' bits).
        compressed_size_bytes: the fine-tuned weights stored the Deep Compression way at the candidate's bits
            (``spaces.compress.compressed_size_bytes``: shared values, Huffman-coded), bytes.
        activation_sparsity: zero activations after each ReLU on validation images and the MACs a
            zero-skipping runtime could save (``spaces.compress.activation_sparsity``; ONNX Runtime on a CPU
            does not skip them).
        onnx_bytes: size of the ``best/model.onnx`` file, bytes.
        files: the files written, by role.
        seconds: wall time of fine-tune, export and measurements.
    """

    candidate: "Candidate"
    shipped: str
    shipped_reason: str
    test_accuracy: float
    val_accuracy: float
    onnx_test_accuracy: float
    fp32_onnx_test_accuracy: float
    quantized_onnx_test_accuracy: float | None
    latency_ms: float
    measured_latency_ms: float | None
    measured_fp32_latency_ms: float | None
    measured_quantized_latency_ms: float | None
    measured_teacher_latency_ms: float | None
    size_bytes: int
    compressed_size_bytes: int
    activation_sparsity: dict[str, Any]
    onnx_bytes: int
    files: dict[str, str]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["candidate"] = self.candidate.to_dict()
        return d


def onnx_logits(path: str | pathlib.Path, x: "torch.Tensor | np.ndarray", *, batch_size: int = 256) -> "np.ndarray":
    """Logits of the ONNX model at ``path`` on inputs ``x`` (N, C, H, W), in batches (one sample at a time
    when the graph has a fixed batch of 1)."""
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


def onnx_accuracy(path: str | pathlib.Path, split: "Split", data: "DataSet") -> float:
    """Top-1 accuracy in ONNX Runtime of the deployable model at ``path`` on ``split``, fed the [0, 1] images
    (the model standardises them itself), a fraction."""
    return top1_accuracy(onnx_logits(path, raw_images(split, data)), split.y)


def deployable_onnx(space: "SearchSpace", candidate: "Candidate", data: "DataSet", path: str | pathlib.Path, *,
                    model: "torch.nn.Module | None" = None,
                    calibration: "Sequence[torch.Tensor] | None" = None) -> "onnx.ModelProto":
    """``space.onnx(candidate, model=...)`` with the data's standardisation inside the graph, written to ``path``.

    ``calibration`` batches are standardised images (what the model sees inside the graph)."""
    import onnx

    proto = with_preprocessing(space.onnx(candidate, model=model, calibration=calibration, dynamic_batch=True),
                               data.mean, data.std)
    onnx.save(proto, str(path))
    return proto


def measurement_description(device: Any) -> str:
    """One line: how :func:`measure_side_by_side` timed the files, on which CPU and runtime."""
    import onnxruntime

    return (f"ONNX Runtime {onnxruntime.__version__} (CPU execution provider, {device.threads} thread(s), "
            f"batch 1) on {cpu_name()}, protocol {PROTOCOL_NAME}: the files of one comparison timed together "
            "in a process with only ONNX Runtime and numpy loaded, each in its own session as deployed, "
            "interleaved in 7 warm blocks, each file's 20 % quantile of its runs")


def measure_side_by_side(paths: Sequence[str | pathlib.Path], *, threads: int = 1) -> list[float]:
    """Milliseconds of each ONNX file, timed together under the protocol ``karumi-interleaved/3``
    (:func:`latency_models.measure_interleaved`): interleaved in warm blocks in one ONNX-Runtime-only
    process, so that a machine drifting during the comparison shifts every file alike."""
    return [t.latency_ms for t in measure_interleaved([str(p) for p in paths], threads=threads)]


def finalize(candidate: "Candidate", *, space: "SearchSpace", data: "DataSet", teacher: "torch.nn.Module",
             out_dir: str | pathlib.Path, epochs: int, measure: bool, predictor: "LatencyPredictor",
             teacher_onnx: str | pathlib.Path | None = None, seed: int = 0, threads: int = 1,
             proxy_options: dict[str, Any] | None = None, initial: "torch.nn.Module | None" = None,
             train_threads: int | None = 1) -> FinalModel:
    """Fine-tune ``candidate`` by distillation on the whole training split, evaluate it, export it.

    Args:
        candidate: the selected candidate.
        space: its space (builds the model, names its quantised layers).
        data: the data set (train for the fine-tune, test for the evaluations).
        teacher: the teacher (its logits on the training split are computed once).
        out_dir: the run folder; files go to ``out_dir/best``.
        epochs: distillation epochs (0: the candidate's weights are only calibrated).
        measure: re-measure the exported models on this machine (the device is local), side by side with
            ``teacher_onnx`` when given.
        predictor: the device's latency predictor (the predicted latency, and the choice between the
            quantised and the float export when the device is not this machine).
        proxy_options: batch size, learning rate, temperature, alpha of the distillation.
        initial: the model to fine-tune, e.g. the weights the candidate inherits from its space's supernet
            (``spaces.Supernet.extract``); default ``space.build(candidate)``.
        threads: ONNX Runtime threads of the measurements (the device's).
        train_threads: torch threads of the fine-tune (None: torch's default, every core; the search's run
            fine-tunes alone, after the trials).
    """
    import torch

    start = time.perf_counter()
    best = pathlib.Path(out_dir) / "best"
    best.mkdir(parents=True, exist_ok=True)
    bits = space.module_bits(candidate)
    opts = dict(proxy_options or {})
    tuner = ProxyEvaluator(data.train, data.val, teacher, epochs=epochs, seed=seed, threads=train_threads, **opts)
    if initial is not None and epochs == 0:  # no training: at least BatchNorm statistics of this sub-network
        from search._distill import recalibrate_batchnorm

        recalibrate_batchnorm(initial, data.train.x)
    trained = tuner.fine_tune(space.build(candidate) if initial is None else initial, bits, epochs=epochs)
    test_acc, val_acc = accuracy(trained, data.test), accuracy(trained, data.val)

    files = {"onnx": str(best / "model.onnx"), "onnx_fp32": str(best / "model_fp32.onnx"),
             "state_dict": str(best / "model_state.pt"), "candidate": str(best / "candidate.json")}
    # the float model: the trained weights (parameter names are kept by prepare_qat) in a fresh build
    fp32 = space.build(candidate)
    own = fp32.state_dict()
    shared = {k: v for k, v in trained.state_dict().items() if k in own and own[k].shape == v.shape}
    missing = sorted(set(own) - set(shared))
    if missing:
        logger.warning("float export: %d tensors not found in the fine-tuned model (e.g. %s)", len(missing), missing[0])
    fp32.load_state_dict(shared, strict=False)
    fp32.eval()
    float_candidate = dataclasses.replace(candidate, bits=(32,) * len(candidate.bits))
    deployable_onnx(space, float_candidate, data, files["onnx_fp32"], model=fp32)
    quantised = any(b != 32 for b in bits.values())
    if quantised:
        files["onnx_quantized"] = str(best / "model_quantized.onnx")
        calib = [data.train.x[i:i + 64] for i in range(0, min(len(data.train), 512), 64)]
        deployable_onnx(space, candidate, data, files["onnx_quantized"], model=trained, calibration=calib)
    torch.save(fp32.state_dict(), files["state_dict"])
    pathlib.Path(files["candidate"]).write_text(candidate.to_json(indent=2) + "\n", encoding="utf-8")
    files["preprocess"] = str(write_contract(best, data))
    files["predict"] = str(best / "predict.py")

    predicted_q, predicted_f = (float(v) for v in predict_latency(predictor, space, [candidate, float_candidate]))
    fp32_acc = onnx_accuracy(files["onnx_fp32"], data.test, data)
    q_acc = onnx_accuracy(files["onnx_quantized"], data.test, data) if quantised else None
    measured_f = measured_q = measured_t = None
    if measure:
        others = [p for p in (files.get("onnx_quantized"), teacher_onnx) if p is not None]
        measured_f, *rest = measure_side_by_side([files["onnx_fp32"], *others], threads=threads)
        measured_q = rest.pop(0) if quantised else None
        measured_t = rest.pop(0) if teacher_onnx is not None else None
    if not quantised:
        shipped, reason = "float32", "the candidate has no quantised layers"
    elif measure:
        faster = measured_q < measured_f
        shipped = "quantized" if faster else "float32"
        reason = (f"the quantised export measures {measured_q:.3f} ms against {measured_f:.3f} ms for its float "
                  f"export on this machine: {'faster' if faster else 'slower'}, side by side")
    else:
        faster = predicted_q < predicted_f
        shipped = "quantized" if faster else "float32"
        reason = (f"the quantised export is predicted at {predicted_q:.3f} ms against {predicted_f:.3f} ms for its "
                  f"float export on the target device: {'faster' if faster else 'slower'}")
    chosen = files["onnx_quantized"] if shipped == "quantized" else files["onnx_fp32"]
    shutil.copyfile(chosen, files["onnx"])
    result = FinalModel(
        candidate=candidate, shipped=shipped, shipped_reason=reason, test_accuracy=test_acc, val_accuracy=val_acc,
        onnx_test_accuracy=q_acc if shipped == "quantized" else fp32_acc, fp32_onnx_test_accuracy=fp32_acc,
        quantized_onnx_test_accuracy=q_acc,
        latency_ms=predicted_q if shipped == "quantized" else predicted_f,
        measured_latency_ms=measured_q if shipped == "quantized" else measured_f,
        measured_fp32_latency_ms=measured_f, measured_quantized_latency_ms=measured_q,
        measured_teacher_latency_ms=measured_t,
        size_bytes=int(space.stats(candidate if shipped == "quantized" else float_candidate).size_bytes),
        compressed_size_bytes=int(compressed_size_bytes(fp32, bits)),
        activation_sparsity=activation_sparsity(fp32, data.val.x, max_images=512),
        onnx_bytes=pathlib.Path(files["onnx"]).stat().st_size, files=files, seconds=time.perf_counter() - start,
    )
    (best / "final.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    logger.info("best/model.onnx is the %s export: %s", shipped, reason)
    return result
