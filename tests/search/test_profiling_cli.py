"""python -m search profile: the user's resolution and the torch-free device workload."""

from __future__ import annotations

import subprocess
import sys

from latency_models import read_workload
from search._profiling import main


def test_write_workload_at_the_users_input_size(tmp_path, capsys):
    folder = tmp_path / "wl"
    rc = main(["profile", "--space", "mobilenet", "--input-size", "64", "--write-workload", str(folder),
               "--models", "2"])
    assert rc == 0
    assert "profile-workload" in capsys.readouterr().out
    pool, models, manifest = read_workload(folder)
    assert manifest["spaces"] == ["mobilenet"] and manifest["space_options"]["input_size"] == 64
    assert len(models) == 2 and all(m.candidate["options"]["input_size"] == 64 for m in models)
    # the stem reads the 64x64 image: 224x224 users profile 224x224 kernels the same way
    stems = [k for k in pool if k.op == "conv" and k.input_shape[0] == 3]
    assert stems and all(k.input_shape[1:] == (64, 64) for k in stems)
    assert max(k.input_shape[1] for k in pool if len(k.input_shape) == 3) == 64
    # a folder holding a workload is not overwritten
    assert main(["profile", "--space", "mobilenet", "--write-workload", str(folder), "--models", "1"]) == 2
    assert "already holds a workload" in capsys.readouterr().err


def test_bad_space_option_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "latency_models", "profile", "--space", "mobilenet", "--option",
                          "nonsense", "--out", str(tmp_path / "t.json")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: --option 'nonsense' must be KEY=VALUE"), out.stderr


def test_the_device_cache_is_keyed_by_the_timing_protocol():
    """A table profiled under an older protocol lives under another fingerprint: profiled again, not mixed."""
    from latency_models import PROTOCOL_NAME
    from search._device import fingerprint
    from spaces import get_space

    fp = fingerprint(get_space("mobilenet", input_size=48), threads=1)
    assert fp["protocol"] == PROTOCOL_NAME == "karumi-interleaved/3"
    assert fp["options"]["input_size"] == 48
    # profiles of random per-layer widths only (before uniform-precision calibration models) are not reused
    assert fp["calibration"] == "random-and-uniform-widths/2"
    # tables whose rows list max pools next to quantised layers at 32 bits (before they were read at 8) neither
    assert fp["kernel_listing"] == "int8-max-pool/1"


def test_the_prune_space_profile_is_keyed_by_the_teachers_architecture_not_its_weights():
    """Retraining the teacher (new weights, same layers) keeps the prune space's latency profile; a teacher
    of another width gets its own."""
    import torch

    from search._device import fingerprint
    from spaces import builtin_teacher, get_space

    def fp(teacher):
        return fingerprint(get_space("prune", teacher=teacher, input_size=16, in_channels=1), threads=1)

    torch.manual_seed(0)
    a = builtin_teacher(in_channels=1, num_classes=10)
    torch.manual_seed(1)
    b = builtin_teacher(in_channels=1, num_classes=10)
    assert get_space("prune", teacher=a, input_size=16, in_channels=1).options["teacher"] != \
        get_space("prune", teacher=b, input_size=16, in_channels=1).options["teacher"]  # the weights differ
    assert fp(a) == fp(b) == fp("builtin")
    assert fp(builtin_teacher(in_channels=1, num_classes=10, width=96)) != fp(a)
    # same parameter shapes, another stride: other kernels, another profile
    c = builtin_teacher(in_channels=1, num_classes=10)
    c.conv1.stride = (2, 2)
    assert fp(c) != fp(a)


def test_calibration_models_include_whole_float_and_uniform_models():
    """Every second turn of the spaces is a uniform-precision model, float32 every second one of those: a
    profile of random per-layer widths alone never times a model without quantise / dequantise nodes."""
    from search._profiling import UNIFORM_BITS, calibration_bits, space_models
    from spaces import get_space

    spaces = [get_space("mobilenet", input_size=16), get_space("shufflenet", input_size=16)]
    make = space_models(spaces, seed=3)
    widths = []
    for j in range(8):
        m = make(j)
        assert m.source == spaces[j % 2].name
        widths.append({k.bits for k in m.kernels if k.op in ("conv", "linear")})
    assert [calibration_bits(j, 2) for j in range(12)] == [None, None, 32, 32, None, None, 8, 8, None, None, 32, 32]
    assert widths[2] == widths[3] == {32} and widths[6] == widths[7] == {8}
    assert all(len(w) > 1 for j, w in enumerate(widths) if calibration_bits(j, 2) is None)
    assert UNIFORM_BITS.count(32) * 2 == len(UNIFORM_BITS)
    # deterministic: the same seed gives the same models
    assert make(6).candidate == space_models(spaces, seed=3)(6).candidate


def test_measure_whole_float_models_and_a_bad_width_is_one_line(tmp_path, capsys):
    from latency_models import LatencyTable

    out = tmp_path / "float.json"
    assert main(["measure", "--space", "mobilenet", "--input-size", "16", "--n", "2", "--bits", "32",
                 "--out", str(out)]) == 0
    rows = LatencyTable.load(out).model_rows
    assert len(rows) == 2 and all(r.latency_ms > 0 for r in rows)
    assert {k.bits for r in rows for k in r.kernels if k.op in ("conv", "linear")} == {32}
    capsys.readouterr()  # the progress lines of the run above
    assert main(["measure", "--space", "mobilenet", "--n", "1", "--bits", "3", "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bits=3 is not allowed" in err[0] and "(1, 2, 4, 8, 16, 32)" in err[0]


def test_a_cached_predictor_saved_before_8bit_pools_had_a_state_is_fitted_again(tmp_path):
    """A search that finds this machine's profile cached by an older karumi (its predictor read 8-bit max pools
    as layout-transparent) fits the predictor again from the cached table, instead of profiling again."""
    import hashlib
    import json

    from latency_models import Kernel, LatencyPredictor, LatencyTable, device_info
    from search._device import fingerprint, resolve_device
    from spaces import get_space

    space = get_space("shufflenet", input_size=64)
    fp = fingerprint(space, threads=1)
    digest = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]
    folder = tmp_path / "devices" / f"shufflenet-{digest}"
    folder.mkdir(parents=True)
    table = LatencyTable(device=device_info(name="local"))
    convs = [Kernel(op="conv", input_shape=(c, 16, 16), out_channels=c, kernel_size=1, bits=b)
             for c in (8, 16, 24) for b in (8, 32)]
    pool = Kernel(op="maxpool", input_shape=(8, 32, 32), kernel_size=3, stride=2, bits=8)
    for k in [*convs, pool]:
        table.add_kernel(k, 0.01 + 1e-6 * k.macs)
    for i in range(8):
        ks = [convs[i % 6], pool, convs[(i + 1) % 6]]
        table.add_model(ks, 0.05 + 0.01 * i, source="shufflenet")
    table.save(folder / "table.json")
    old = LatencyPredictor.fit(table, int8_pool_state=False).to_dict()
    del old["int8_pool_state"]
    (folder / "predictor.json").write_text(json.dumps(old))

    device = resolve_device("local", space, cache=tmp_path)
    assert device.predictor.int8_pool_state and not device.profiled_now
    assert json.loads((folder / "predictor.json").read_text())["int8_pool_state"] is True


def test_a_bad_kernel_share_flag_is_one_line_and_a_good_one_reaches_the_profile(tmp_path, capsys, monkeypatch):
    import search._profiling as profiling

    out = tmp_path / "t.json"
    assert main(["profile", "--space", "mobilenet", "--input-size", "16", "--out", str(out), "--kernel-share",
                 "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == "error: --kernel-share 1.5; allowed: a share of the budget above 0 and below 1"
    assert not out.exists()  # nothing timed
    seen = {}

    def fake_profile(*args, **kwargs):  # noqa: ANN202 - records what the command passes on
        seen.update(kwargs)
        raise ValueError("stopped here")

    monkeypatch.setattr(profiling, "profile", fake_profile)
    assert main(["profile", "--space", "mobilenet", "--input-size", "16", "--out", str(out), "--kernel-share",
                 "0.5"]) == 2
    assert seen["kernel_share"] == 0.5


def test_offgrid_share_flag_reaches_the_profile_and_a_bad_one_is_one_line(tmp_path, capsys):
    import spaces
    from latency_models import LatencyTable
    from search import kernel_pool

    out = tmp_path / "t.json"
    assert main(["profile", "--space", "mobilenet", "--input-size", "16", "--out", str(out), "--offgrid-share",
                 "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --offgrid-share 1.5 must be a number in [0, 1)"), err
    assert not out.exists()  # nothing timed
    assert main(["profile", "--space", "mobilenet", "--input-size", "16", "--out", str(out), "--offgrid-share", "0",
                 "--budget-min", "0.05"]) == 0
    pool = kernel_pool([spaces.get_space("mobilenet", input_size=16)])
    assert {r.kernel for r in LatencyTable.load(out).kernel_rows} <= set(pool)  # 0: the pool's kernels only
