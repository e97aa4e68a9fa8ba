from __future__ import annotations

import subprocess
import sys
import textwrap


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
