from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest


def test_latency_models_works_without_torch(tmp_path):
    """The package on an edge device: torch made unimportable before the import."""
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None
        import numpy as np
        import latency_models
        from latency_models import Kernel, LatencyTable, LatencyPredictor, kernel_graph, measure_onnx, evaluate
        from latency_models._table import device_info
        ks = [Kernel("conv", (3, 16, 16), out_channels=c, kernel_size=3, activation="relu") for c in (8, 16, 24)]
        t = LatencyTable(device=device_info(name="edge"))
        for i, k in enumerate(ks):
            t.add_model([k, Kernel("global_avgpool", (k.out_channels, 16, 16))], 0.1 + 0.05 * i)
        t.add_kernel(ks[0], measure_onnx(kernel_graph(ks[0])))
        t.save(r"{tmp_path}/t.json")
        t = LatencyTable.load(r"{tmp_path}/t.json")
        p = LatencyPredictor.fit(t)
        p.save(r"{tmp_path}/p.json")
        q = LatencyPredictor.load(r"{tmp_path}/p.json")
        model = [ks[1], Kernel("global_avgpool", (16, 16, 16))]
        assert q.predict(model) == p.predict(model)
        assert abs(p.predict(model) - 0.15) < 0.01, p.predict(model)
        assert evaluate(q, t)["n"] == 3
        assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None and m.split(".")[0] == "torch"]
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def _venv_without_torch(root):
    """A virtual environment with only numpy, onnx and onnxruntime (from the configured package index)."""
    venv = root / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300)
    if made.returncode != 0:
        pytest.skip(f"python -m venv failed: {made.stderr.strip()[-300:]}")
    py = venv / "bin" / "python"
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", "numpy", "onnx", "onnxruntime"],
                         capture_output=True, text=True, timeout=900)
    if pip.returncode != 0:
        pytest.skip(f"pip cannot install numpy, onnx, onnxruntime here: {pip.stderr.strip()[-300:]}")
    return py


@pytest.mark.slow
def test_device_profiles_a_workload_in_a_venv_without_torch(tmp_path):
    """The device side of a profile: a host writes the workload, a venv with numpy, onnx and onnxruntime
    only (no torch, no spaces, no search) times it into a table, fits the predictor and predicts."""
    import shutil

    import latency_models
    from latency_models import Kernel, WorkloadModel, kernels_from_onnx, reference_model, write_workload

    # host side: a pool of kernels and two whole models (the reference CNN and a one-conv graph)
    pool = {Kernel("conv", (8, 16, 16), out_channels=c, kernel_size=3, activation="relu"): 1.0 for c in (8, 16, 24)}
    pool[Kernel("global_avgpool", (16, 16, 16))] = 1.0
    ref = reference_model()
    ref_kernels, unknown = kernels_from_onnx(ref)
    assert not unknown
    conv = Kernel("conv", (16, 40, 40), out_channels=48, kernel_size=3)
    models = [WorkloadModel(onnx=ref, kernels=tuple(ref_kernels), source="reference"),
              WorkloadModel(onnx=latency_models.kernel_graph(conv), kernels=(conv,), source="conv")]
    workload = tmp_path / "workload"
    write_workload(workload, pool, models, spaces=["toy"], space_options={"input_size": 16})

    py = _venv_without_torch(tmp_path)
    device = tmp_path / "device"
    shutil.copytree(pathlib.Path(latency_models.__file__).parent, device / "latency_models",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    cmd = [str(py), "-m", "latency_models", "profile-workload", str(workload), "--out", str(tmp_path / "t.json"),
           "--device-name", "edge", "--budget-min", "0.3"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=device, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "2 model rows" in out.stdout and "karumi-interleaved/3" in out.stdout, out.stdout
    check = textwrap.dedent(f"""
        import importlib.util, json, sys
        assert importlib.util.find_spec("torch") is None, "torch is installed in the device venv"
        from latency_models import Kernel, LatencyPredictor, LatencyTable
        t = LatencyTable.load(r"{tmp_path}/t.json")
        assert t.protocol["name"] == "karumi-interleaved/3" and t.protocol["space_options"] == {{"input_size": 16}}
        assert t.protocol["spaces"] == ["toy"] and len(t.kernel_rows) >= 4 and len(t.model_rows) == 2
        assert all(r.reference_ms > 0 for r in t.model_rows + t.kernel_rows)
        p = LatencyPredictor.load(r"{tmp_path}/t.predictor.json")
        ms = p.predict([Kernel("conv", (16, 40, 40), out_channels=48, kernel_size=3)])
        assert ms > 0, ms
        assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "spaces", "search")]
        print("ok", ms)
    """)
    res = subprocess.run([str(py), "-c", check], capture_output=True, text=True, timeout=300, cwd=device, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("ok")
    timed = {r.kernel for r in latency_models.LatencyTable.load(tmp_path / "t.json").kernel_rows}
    assert set(pool) <= timed  # the pool's kernels, and off-grid variants of them as the budget allows
    # a model of the user's own, timed into the device's table there (its kernels and the whole model)
    import onnx

    mine = tmp_path / "mine.onnx"
    onnx.save(latency_models.kernel_graph(Kernel("conv", (16, 40, 40), out_channels=24, kernel_size=1)), mine)
    cmd = [str(py), "-m", "latency_models", "add-models", str(tmp_path / "t.json"), str(mine), "--name", "mine"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=device, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "+1 model rows" in out.stdout and "3 models outside the spaces" in out.stdout, out.stdout
    table = latency_models.LatencyTable.load(tmp_path / "t.json")
    assert [r.source for r in table.model_rows][-1] == "mine" and len(table.kernel_rows) == len(timed) + 1
    # the device's noise floor, there too: the same model re-timed in fresh workers
    cmd = [str(py), "-m", "latency_models", "noise-floor", str(mine), "--rounds", "2", "--out", str(tmp_path / "nf.json")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=device, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "noise floor of this device: 1 model timed in 2 fresh workers (1 pairs of timings)" in out.stdout, out.stdout
    assert json.loads((tmp_path / "nf.json").read_text())["models"][0]["latency_ms"][1] > 0
