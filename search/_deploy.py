"""The deployable model: the image as a user has it goes in, the standardisation is inside the graph.

Every ONNX file a run writes for deployment (``best/model.onnx``, ``best/model_fp32.onnx``,
``teacher.onnx``, the front's ``pareto_onnx/``) takes float32 images in [0, 1], NCHW, at the trained size,
with a dynamic batch dimension. The per-channel standardisation of the training split is part of the
graph: folded into the first convolution when that is exact (it reads the input directly, pads nothing and
has float weights), else a per-channel ``Mul`` and ``Add`` at the input (a few microseconds).
``best/preprocess.json`` states the contract; ``search/predict.py`` reads it with ONNX Runtime alone.
"""

from __future__ import annotations

import json
import logging
import pathlib
import shutil
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    import onnx
    import torch

    from search._data import DataSet, Split

__all__ = ["PREPROCESS", "preprocess_contract", "raw_images", "with_preprocessing", "write_contract"]

logger = logging.getLogger(__name__)

#: The contract file beside a deployed model.
PREPROCESS = "preprocess.json"
FORMAT_VERSION = 1


def raw_images(split: "Split", data: "DataSet") -> "torch.Tensor":
    """The images of ``split`` as a user has them: scaled to [0, 1], before the standardisation."""
    import torch

    mean = torch.tensor(data.mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    std = torch.tensor(data.std, dtype=torch.float32).reshape(1, -1, 1, 1)
    return split.x * std + mean


def with_preprocessing(proto: "onnx.ModelProto", mean: Sequence[float], std: Sequence[float]) -> "onnx.ModelProto":
    """A copy of ``proto`` whose input is the image in [0, 1]: ``(x - mean) / std`` per channel inside the graph."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    name = graph.input[0].name
    mean_a, std_a = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    if _fold_into_first_conv(graph, name, mean_a, std_a):
        return model
    scale = numpy_helper.from_array((1.0 / std_a).reshape(1, -1, 1, 1), f"{name}_preprocess_scale")
    shift = numpy_helper.from_array((-mean_a / std_a).reshape(1, -1, 1, 1), f"{name}_preprocess_shift")
    scaled, normed = f"{name}_scaled", f"{name}_standardised"
    for node in graph.node:
        for i, inp in enumerate(node.input):
            if inp == name:
                node.input[i] = normed
    nodes = [helper.make_node("Mul", [name, scale.name], [scaled], name="preprocess_scale"),
             helper.make_node("Add", [scaled, shift.name], [normed], name="preprocess_shift")]
    old = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old)
    graph.initializer.extend([scale, shift])
    return model


def _fold_into_first_conv(graph: Any, name: str, mean: Any, std: Any) -> bool:
    """Fold the standardisation into the one float ``Conv`` reading the input, if that is exact; True if done.

    ``conv((x - m) / s)`` equals ``conv'(x)`` with ``W'[:, c] = W[:, c] / s[c]`` and
    ``b' = b - sum(W'[:, c] * m[c])`` only when no padding mixes zeros in (a zero of the standardised image
    is not a zero of the raw one) and the convolution is not grouped.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    users = [n for n in graph.node if name in n.input]
    if len(users) != 1 or users[0].op_type != "Conv":
        return False
    conv = users[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    if any(int(p) != 0 for p in attrs.get("pads", [])) or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID") \
            or int(attrs.get("group", 1)) != 1:
        return False
    inits = {t.name: t for t in graph.initializer}
    wname = conv.input[1]
    if wname not in inits or sum(wname in n.input for n in graph.node) != 1:
        return False
    w = numpy_helper.to_array(inits[wname]).astype(np.float32)
    if w.dtype != np.float32 or w.shape[1] != len(mean):
        return False
    bname = conv.input[2] if len(conv.input) > 2 and conv.input[2] else None
    if bname is not None and (bname not in inits or sum(bname in n.input for n in graph.node) != 1):
        return False
    b = numpy_helper.to_array(inits[bname]).astype(np.float32) if bname else np.zeros(w.shape[0], np.float32)
    w2 = w / std.reshape(1, -1, 1, 1)
    b2 = b - (w2 * mean.reshape(1, -1, 1, 1)).sum(axis=(1, 2, 3))
    inits[wname].CopyFrom(numpy_helper.from_array(w2.astype(np.float32), wname))
    if bname is None:
        bname = f"{conv.name or 'conv'}_bias_preprocess"
        graph.initializer.append(numpy_helper.from_array(b2.astype(np.float32), bname))
        conv.input.append(bname)
    else:
        inits[bname].CopyFrom(numpy_helper.from_array(b2.astype(np.float32), bname))
    return True


def preprocess_contract(data: "DataSet") -> dict[str, Any]:
    """What ``best/preprocess.json`` says: how to turn an image file into the model's input."""
    c, h, w = data.input_shape
    return {
        "format_version": FORMAT_VERSION,
        "input_size": [h, w],
        "channels": c,
        "color": "grey" if c == 1 else "RGB",
        "layout": "NCHW",
        "dtype": "float32",
        "scale": "1/255",
        "resize": "bilinear",
        "mean": [],
        "std": [],
        "standardisation_in_graph": {"mean": list(data.mean), "std": list(data.std)},
        "input_name": "input",
        "output_name": "logits",
        "batch": "dynamic",
        "classes": list(data.classes) or [str(i) for i in range(data.num_classes)],
        "data": data.name,
    }


def write_contract(folder: pathlib.Path, data: "DataSet") -> pathlib.Path:
    """``preprocess.json`` and a copy of the stand-alone ``predict.py`` in ``folder``."""
    path = folder / PREPROCESS
    path.write_text(json.dumps(preprocess_contract(data), indent=2) + "\n", encoding="utf-8")
    shutil.copyfile(pathlib.Path(__file__).with_name("predict.py"), folder / "predict.py")
    return path
