"""Export a torch model to ONNX the same way everywhere in the project."""

from __future__ import annotations

import io
import logging
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx
    import torch

__all__ = ["export_onnx"]

logger = logging.getLogger(__name__)

OPSET = 18
#: Highest ONNX IR version that ONNX Runtime >= 1.18 loads; newer onnx packages write higher by default.
MAX_IR_VERSION = 10


def export_onnx(model: "torch.nn.Module", input_shape: tuple[int, ...], path: str | None = None, *,
                dynamic_batch: bool = False) -> "onnx.ModelProto":
    """Export ``model`` (eval mode, float32, batch 1) to ONNX and return the ``ModelProto``.

    ``dynamic_batch``: the batch dimension of the input ``input`` and the output ``logits`` is dynamic
    (named ``batch``; what a deployed model wants). Fixed (the default), the exporter folds every shape
    computation into constants, which is what the latency kernel reader reads most completely; the two
    run equally fast at batch 1.

    Uses the TorchScript exporter where the installed torch still has it (fast, and it folds BatchNorm
    into the preceding convolution), and the ``torch.export`` based exporter otherwise. Node and
    initializer names keep the module paths. The IR version is capped at :data:`MAX_IR_VERSION` so that
    ONNX Runtime loads the file. Writes ``path`` when given.
    """
    import onnx
    import torch

    model = model.eval()
    example = torch.zeros((1, *input_shape), dtype=torch.float32)
    dynamic = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (example,), buffer, dynamo=False, opset_version=OPSET,
                input_names=["input"], output_names=["logits"], do_constant_folding=True, dynamic_axes=dynamic,
            )
        proto = onnx.load_from_string(buffer.getvalue())
    except (TypeError, RuntimeError, AttributeError) as exc:  # legacy exporter removed or failing
        logger.debug("TorchScript ONNX exporter unavailable (%s); using torch.export", exc)
        program = torch.onnx.export(
            model, (example,), dynamo=True, opset_version=OPSET, input_names=["input"], output_names=["logits"],
            dynamic_axes=dynamic,
        )
        proto = program.model_proto
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    if path is not None:
        onnx.save(proto, path)
    return proto
