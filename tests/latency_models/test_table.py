from __future__ import annotations

import json

import pytest

from latency_models import Kernel, LatencyTable
from latency_models._table import device_info

K1 = Kernel("conv", (16, 8, 8), out_channels=32, kernel_size=3, activation="relu")
K2 = Kernel("add", (32, 8, 8))
K3 = Kernel("linear", (32,), out_channels=10, bits=8)


def _table(name: str = "dev") -> LatencyTable:
    t = LatencyTable(device=device_info(name=name, description="test"))
    t.add_kernel(K1, 0.12)
    t.add_kernel(K2, 0.01)
    t.add_model([K1, K2, K3], 0.2, candidate={"space": "x", "genes": {"ops": ["a"]}}, source="x")
    return t


def test_device_metadata_is_recorded():
    d = _table().device
    for field in ("name", "description", "runtime", "runtime_version", "execution_provider", "threads",
                  "cpu_model", "created_utc"):
        assert field in d
    assert d["runtime"] == "onnxruntime" and d["execution_provider"] == "CPUExecutionProvider"
    proto = _table().protocol
    assert proto["name"] == "karumi-interleaved/3" and proto["reference"] == "karumi-reference/1"
    assert proto["warmup"] >= 10 and proto["blocks"] >= 5 and proto["quantile"] == 0.2


def test_save_load_round_trip(tmp_path):
    t = _table()
    t.save(tmp_path / "t.json")
    back = LatencyTable.load(tmp_path / "t.json")
    assert back.to_dict() == t.to_dict()
    assert back.kernel_rows[0].kernel == K1 and back.model_rows[0].kernels == (K1, K2, K3)
    assert back.validate() is back


def _mutate(data, path, value):
    target = data
    for p in path[:-1]:
        target = target[p]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value


@pytest.mark.parametrize(
    "path, value, match",
    [
        (("format_version",), 99, "format_version"),
        (("kernel_rows", 1, "latency_ms"), KeyError, r"kernel row 1: field 'latency_ms' is missing"),
        (("kernel_rows", 0, "latency_ms"), -1.0, r"kernel row 0: field 'latency_ms'=-1.0"),
        (("model_rows", 0, "latency_ms"), "fast", r"model row 0: field 'latency_ms'"),
        (("model_rows", 0, "kernels"), [], r"model row 0: field 'kernels'"),
        (("kernel_rows", 1, "kernel", "op"), "conv3d", r"kernel row 1: field 'kernel'.*op"),
        (("model_rows", 0, "kernels", 2, "bits"), 6, r"model row 0: field 'kernels\[2\]'.*bits"),
        (("device", "name"), "", "device.name"),
    ],
)
def test_validation_names_row_and_field(tmp_path, path, value, match):
    data = _table().to_dict()
    _mutate(data, path, value)
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match):
        LatencyTable.load(tmp_path / "bad.json")


def test_truncated_file_is_a_clear_error(tmp_path):
    _table().save(tmp_path / "t.json")
    text = (tmp_path / "t.json").read_text()
    (tmp_path / "t.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="malformed or truncated"):
        LatencyTable.load(tmp_path / "t.json")


def test_a_gzipped_table_loads_and_a_binary_file_is_a_clear_error(tmp_path):
    import gzip

    _table().save(tmp_path / "t.json")
    (tmp_path / "t.json.gz").write_bytes(gzip.compress((tmp_path / "t.json").read_bytes()))
    assert LatencyTable.load(tmp_path / "t.json.gz").to_dict() == LatencyTable.load(tmp_path / "t.json").to_dict()
    (tmp_path / "cut.json.gz").write_bytes((tmp_path / "t.json.gz").read_bytes()[:40])
    with pytest.raises(ValueError, match="cut.json.gz' is a truncated or corrupt gzip file"):
        LatencyTable.load(tmp_path / "cut.json.gz")
    (tmp_path / "model.onnx").write_bytes(b"\x08\x0a\xff\xfe binary")
    with pytest.raises(ValueError, match="model.onnx' is not JSON text; allowed: a UTF-8 JSON file, plain or gzipped"):
        LatencyTable.load(tmp_path / "model.onnx")


def test_add_rejects_bad_latency():
    t = _table()
    with pytest.raises(ValueError, match="kernel row 2"):
        t.add_kernel(K3, 0.0)
    with pytest.raises(ValueError, match="model row 1"):
        t.add_model([K1], float("nan"))


def test_merge_keeps_median_kernel_and_all_models():
    a, b, c = _table(), _table(), _table()
    b.kernel_rows[0] = type(b.kernel_rows[0])(K1, 0.30)
    c.kernel_rows[0] = type(c.kernel_rows[0])(K1, 0.20)
    m = LatencyTable.merge(a, b, c)
    lat = {r.kernel: r.latency_ms for r in m.kernel_rows}
    assert lat[K1] == pytest.approx(0.20) and lat[K2] == pytest.approx(0.01)
    assert len(m.model_rows) == 3
    with pytest.raises(ValueError, match="device name"):
        LatencyTable.merge(a, _table("other"))


def test_from_measurements_with_candidates_and_kernel_lists():
    spaces = pytest.importorskip("spaces")
    space = spaces.get_space("fbnet")
    cand = space.candidate(ops=["k3_e1"] * 22)
    t = LatencyTable.from_measurements(device="phone", kernels=[space.kernels(cand), [K1, K2]],
                                       candidates=[cand.to_dict(), None], latencies_ms=[3.0, 1.0])
    assert t.device["name"] == "phone" and len(t.model_rows) == 2
    assert list(t.model_rows[0].kernels) == space.kernels(cand)
    assert t.model_rows[0].candidate["genes"]["ops"] == ["k3_e1"] * 22
    with pytest.raises(ValueError, match="same length"):
        LatencyTable.from_measurements(device="phone", kernels=[space.kernels(cand)], latencies_ms=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"candidates\[0\]"):
        LatencyTable.from_measurements(device="phone", kernels=[[K1]], candidates=[42], latencies_ms=[1.0])


def test_a_table_timed_across_a_long_slow_stretch_says_so():
    """The rows' references tell how much the machine's state moved during the profile: one state -> no
    warning; a fifth of the kernel rows in a state 10 % slower -> one line saying to profile again."""
    from latency_models import REFERENCE_SPREAD_WARN

    def table(slow_share: float, n: int = 50) -> LatencyTable:
        t = LatencyTable(device={"name": "d"})
        for i in range(n):
            k = Kernel(op="conv", input_shape=(8, 8, 8), out_channels=8 + 8 * i)
            t.add_kernel(k, 0.1, reference_ms=0.25 * (1.10 if i < slow_share * n else 1.0) * (1 + 1e-4 * i))
        return t

    steady, slow = table(0.0), table(0.2)
    assert steady.reference_spread() == pytest.approx(1.0, abs=0.01) and steady.state_warning() is None
    assert slow.reference_spread() > REFERENCE_SPREAD_WARN
    assert "profile again" in slow.state_warning() and "spread 9.9 %" in slow.state_warning()
    assert table(0.2, n=10).reference_spread() is None and table(0.2, n=10).state_warning() is None  # too few rows


def test_a_profiling_command_ends_by_writing_the_predictor_and_saying_what_the_table_is_worth(tmp_path):
    """``fit_beside`` (the end of ``profile`` and ``profile-workload``): the predictor written beside the table,
    one line on the rows, then the recorded noise floor and the state warning where the table has them."""
    from latency_models import LatencyPredictor, fit_beside

    def table(slow_share: float, floor: bool) -> LatencyTable:
        t = LatencyTable(device={"name": "d"}, protocol={"name": "karumi-interleaved/3"},
                         extra={"spent_s": 90.0})
        for i in range(50):
            k = Kernel(op="conv", input_shape=(8, 8, 8), out_channels=8 + 8 * i)
            t.add_kernel(k, 0.01 * (1 + i), reference_ms=0.25 * (1.10 if i < slow_share * 50 else 1.0))
        if floor:
            s = {"pairs": 8, "within_2": 0.5, "within_5": 0.75, "within_10": 1.0, "max_abs": 0.08}
            t.extra["noise_floor"] = {"models": 8, "model_rows": 20, "as_measured": s, "on_reference_scale": s}
        return t

    pred, lines = fit_beside(table(0.0, floor=False), tmp_path / "calm.json")
    assert LatencyPredictor.load(tmp_path / "calm.predictor.json").to_dict() == pred.to_dict()
    assert len(lines) == 1 and lines[0].startswith(f"{tmp_path / 'calm.json'}: 50 kernel rows, 0 model rows in 1.5 min")
    assert "protocol karumi-interleaved/3, reference 0.2500 ms" in lines[0]
    _, lines = fit_beside(table(0.2, floor=True), tmp_path / "slow.json")
    assert len(lines) == 3 and lines[1].startswith("noise floor: the profile's first 8 calibration models")
    assert "50 / 75 / 100 %" in lines[1] and lines[2].startswith("warning: the machine's speed changed")
