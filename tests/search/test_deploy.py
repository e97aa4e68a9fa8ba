"""The deployable model: standardisation inside the graph (folded where exact), dynamic batch, the
stand-alone predict.py that needs ONNX Runtime, numpy and Pillow only."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from search._deploy import preprocess_contract, with_preprocessing, write_contract  # noqa: E402
from spaces.compress import export_onnx  # noqa: E402

MEAN, STD = (0.2, 0.5, 0.7), (0.3, 0.25, 0.1)


def _net(padding: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=padding), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()


@pytest.mark.parametrize("padding", [0, 1])
def test_standardisation_inside_the_graph_computes_the_trained_model(padding):
    net = _net(padding)
    proto = with_preprocessing(export_onnx(net, (3, 12, 12), dynamic_batch=True), MEAN, STD)
    ops = [n.op_type for n in proto.graph.node]
    if padding == 0:
        assert "Mul" not in ops and "Add" not in ops  # folded into the first convolution: free
    else:
        assert ops[:2] == ["Mul", "Add"]  # a zero-padded conv cannot absorb it exactly
    raw = np.random.default_rng(0).random((5, 3, 12, 12), dtype=np.float32)  # images in [0, 1], batch of 5
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": raw})[0]
    standardised = (torch.from_numpy(raw) - torch.tensor(MEAN).reshape(1, 3, 1, 1)) / torch.tensor(STD).reshape(1, 3, 1, 1)
    with torch.no_grad():
        want = net(standardised).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_predict_py_classifies_image_files_without_torch(tmp_path):
    from PIL import Image

    import search

    data = search.load_data("shapes", seed=0)
    net = _net(1)
    proto = with_preprocessing(export_onnx(net, (3, 32, 32), dynamic_batch=True), data.mean, data.std)
    onnx.save(proto, str(tmp_path / "model.onnx"))
    write_contract(tmp_path, data)
    contract = json.loads((tmp_path / "preprocess.json").read_text())
    assert contract == preprocess_contract(data)
    assert contract["input_size"] == [32, 32] and contract["channels"] == 3 and contract["mean"] == []
    assert contract["classes"][:3] == ["disc", "square", "triangle"] and contract["scale"] == "1/255"
    rng = np.random.default_rng(1)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(paths[-1])  # resized to 32x32
    code = textwrap.dedent(f"""
        import runpy, sys
        sys.modules["torch"] = None  # a machine without torch
        sys.argv = ["predict.py", *{[str(p) for p in paths]!r}, "--top", "2"]
        runpy.run_path({str(tmp_path / "predict.py")!r}, run_name="__main__")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith(str(p)) for line, p in zip(lines, paths))
    # the same images through PIL + numpy by hand: the printed top class is the model's
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for line, p in zip(lines, paths):
        with Image.open(p) as im:
            x = np.asarray(im.convert("RGB").resize((32, 32), Image.BILINEAR), np.float32).transpose(2, 0, 1) / 255
        top = contract["classes"][int(sess.run(None, {"input": x[None]})[0].argmax())]
        assert line.split(": ", 1)[1].startswith(f"{top} ")
    bad = subprocess.run([sys.executable, str(tmp_path / "predict.py"), str(tmp_path / "missing.png")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: image")
