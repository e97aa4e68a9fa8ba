"""latency_models.noise_floor and ``python -m latency_models noise-floor``: models re-timed in fresh workers."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from latency_models import Kernel, kernel_graph, noise_floor, reference_model
from latency_models._cli import main
from latency_models._floor import difference_shares, pair_differences


def test_every_pair_of_rounds_is_compared_model_by_model() -> None:
    lat = np.array([[1.00, 2.00], [1.01, 2.19], [0.97, 2.00]])
    d = pair_differences(lat)
    np.testing.assert_allclose(d, [0.01, 0.095, -0.03, 0.0, 0.97 / 1.01 - 1, 2.0 / 2.19 - 1])
    s = difference_shares(d)
    assert s["pairs"] == 6
    assert s["within_2"] == pytest.approx(2 / 6) and s["within_5"] == pytest.approx(4 / 6)
    assert s["within_10"] == 1.0 and s["max_abs"] == pytest.approx(0.095) and s["sd_log"] > 0
    with pytest.raises(ValueError, match="rounds >= 2"):
        pair_differences(lat[:1])


@pytest.fixture()
def two_models(tmp_path):
    a, b = tmp_path / "reference.onnx", tmp_path / "conv.onnx"
    onnx.save(reference_model(), a)
    onnx.save(kernel_graph(Kernel("conv", (16, 24, 24), out_channels=32, kernel_size=3)), b)
    return [a, b]


def test_noise_floor_times_every_model_in_every_round(two_models) -> None:
    seen = []
    res = noise_floor(two_models, rounds=3, on_round=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert res["protocol"] == "karumi-interleaved/3" and res["rounds"] == 3 and res["threads"] == 1
    assert [m["model"] for m in res["models"]] == [str(p) for p in two_models]  # in the order given
    for m in res["models"]:
        assert len(m["latency_ms"]) == 3 and min(m["latency_ms"]) > 0 and min(m["reference_ms"]) > 0
    lat = np.array([m["latency_ms"] for m in res["models"]]).T
    assert res["as_measured"] == difference_shares(pair_differences(lat))
    for key in ("as_measured", "on_reference_scale"):
        s = res[key]
        assert s["pairs"] == 6 and 0 <= s["within_2"] <= s["within_5"] <= s["within_10"] <= 1


def test_cli_prints_the_shares_and_writes_json(two_models, tmp_path, capsys) -> None:
    out = tmp_path / "floor.json"
    assert main(["noise-floor", *map(str, two_models), "--rounds", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "noise floor of this device: 2 models timed in 2 fresh workers (2 pairs of timings)" in text
    assert "on the reference's scale:" in text and str(two_models[1]) in text
    assert json.loads(out.read_text())["rounds"] == 2


@pytest.mark.parametrize("argv, message", [
    (["noise-floor", "missing.onnx"], "error: model 'missing.onnx' does not exist; allowed: ONNX files"),
    (["noise-floor", "REF", "--rounds", "1"], "error: --rounds 1; allowed: 2 or more"),
    (["noise-floor", "REF", "--out", "/proc/no/such/dir/floor.json"], "error: --out /proc/no/such/dir/floor.json: cannot"),
])
def test_cli_bad_input_is_one_line_and_exit_2(two_models, capsys, argv, message) -> None:
    argv = [str(two_models[0]) if a == "REF" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message)
