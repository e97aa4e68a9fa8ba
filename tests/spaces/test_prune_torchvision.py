"""Structured pruning of every torchvision classification model at ratio 0.5: parameters removed, output
shapes (eval and training mode), and the ONNX export in ONNX Runtime against PyTorch.

One model per family runs by default; the rest are marked slow (they still run in CI). The 224x224 speed
of the pruned CNNs is measured in ``experiments/torchvision_pruning.py``, not asserted here.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torchvision

from spaces.compress import export_onnx, prune_structured

MODELS = torchvision.models.list_models(module=torchvision.models)
#: One per family: the default run.
FAST = {"convnext_tiny", "densenet121", "efficientnet_b0", "googlenet", "mnasnet0_5", "mobilenet_v2",
        "mobilenet_v3_small", "regnet_x_400mf", "regnet_y_400mf", "resnet18", "resnext50_32x4d",
        "shufflenet_v2_x0_5", "squeezenet1_1"}
#: Input sizes the architecture needs (its auxiliary classifier, its partition grid); 64 otherwise.
SIZES = {"inception_v3": 299, "maxvit_t": 224}
#: Constructor options: the ViTs are built for 64x64 inputs (a 4x4 or 2x2 patch grid: the same blocks and widths as
#: at 224; vit_l_16 27 s instead of 51 s on a 2-core test machine).
OPTIONS = {m: {"image_size": 64} for m in MODELS if m.startswith("vit_")}
#: Not CNNs: attention blocks lock the embedding width (only the MLP hidden layers are pruned), measured
#: removal in parentheses. The goal of >= 50 % is for the CNNs.
TRANSFORMERS = {m: "Swin: MLP hidden layers only (31-32 % removed)" for m in MODELS if m.startswith("swin")}
TRANSFORMERS.update({m: "ViT: MLP hidden layers only (32-33 % removed)" for m in MODELS if m.startswith("vit_")})
TRANSFORMERS["maxvit_t"] = "MaxViT: attention blocks lock the channel width (39 % removed)"
#: Over 600 M parameters: two copies and an export exceed the test machine's memory and the 2 GB ONNX limit.
TOO_BIG = {"regnet_y_128gf", "vit_h_14"}


def _cases() -> list:
    cases = []
    for name in MODELS:
        marks = [] if name in FAST else [pytest.mark.slow]
        if name in TOO_BIG:
            marks.append(pytest.mark.skip(reason="over 600 M parameters: two copies and an ONNX export exceed the "
                                                 "test machine's memory and the 2 GB ONNX protobuf limit"))
        cases.append(pytest.param(name, marks=marks, id=name))
    return cases


@pytest.mark.parametrize("name", _cases())
def test_every_torchvision_model_is_pruned_and_exports(name, one_torch_thread):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torchvision.models.get_model(name, weights=None, num_classes=10, **OPTIONS.get(name, {})).eval()
    size = SIZES.get(name, 64)
    x = torch.randn(2, 3, size, size)
    before = sum(p.numel() for p in model.parameters())
    pruned = prune_structured(model, 0.5, example_input=x)
    removed = 1.0 - sum(p.numel() for p in pruned.parameters()) / before
    with torch.no_grad():
        out = pruned(x)
        assert out.shape == (2, 10)
        trained = copy.deepcopy(pruned).train()(x)  # training mode too (auxiliary classifiers, BatchNorm)
        logits = trained[0] if isinstance(trained, tuple) else trained
        assert logits.shape == (2, 10)
    if name in TRANSFORMERS:
        assert 0.0 <= removed < 0.5, f"{name}: {removed:.3f} removed"  # if this fails, move it out of TRANSFORMERS
    else:
        assert removed >= 0.5, f"{name}: only {removed:.3f} of the parameters removed"
    proto = export_onnx(pruned, (3, size, size))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x[:1].numpy()})[0]
    ref = out[:1].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4 * max(1.0, float(np.abs(ref).max())), rtol=1e-3)
