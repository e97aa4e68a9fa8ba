from __future__ import annotations

import math

import numpy as np
import pytest

from latency_models import KERNEL_OPS, Kernel, LatencyPredictor, LatencyTable, kernel_graph, measure_onnx, profile
from latency_models._cli import main as cli_main
from latency_models._measure import make_session, time_session

_EXAMPLES = {
    "conv": dict(input_shape=(8, 12, 12), out_channels=16, kernel_size=3, activation="relu6"),
    "linear": dict(input_shape=(32,), out_channels=10, activation="relu"),
    "add": dict(input_shape=(8, 6, 6), activation="relu"),
    "concat": dict(input_shape=(8, 6, 6)),
    "split": dict(input_shape=(8, 6, 6), groups=2),
    "channel_shuffle": dict(input_shape=(8, 6, 6), groups=2),
    "global_avgpool": dict(input_shape=(8, 6, 6)),
    "maxpool": dict(input_shape=(8, 6, 6), kernel_size=3, stride=2),
    "avgpool": dict(input_shape=(8, 6, 6), kernel_size=2, stride=2, padding=0),
    "crelu": dict(input_shape=(8, 6, 6), activation="relu"),
    "scale": dict(input_shape=(8, 6, 6), activation="hardsigmoid"),
    "act": dict(input_shape=(8, 6, 6), activation="swish"),
}


@pytest.mark.parametrize("bits", [32, 16, 8, 4, 2, 1])
@pytest.mark.parametrize("op", KERNEL_OPS)
def test_every_kernel_graph_runs_in_onnx_runtime(op, bits):
    k = Kernel(op, bits=bits, **_EXAMPLES[op])
    model = kernel_graph(k)
    assert model.ir_version == 10
    session = make_session(model, threads=1)
    outs = session.run(None, {i.name: np.ones([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
                              for i in session.get_inputs()})
    produced = sum(o.size for o in outs)
    assert produced == math.prod(k.output_shape) * (k.groups if op == "split" else 1)  # split: every part


def test_int8_conv_graph_is_fused_like_the_exported_models(tmp_path):
    import onnx
    import onnxruntime as ort

    k = Kernel("conv", (16, 8, 8), out_channels=32, kernel_size=3, bits=8, activation="relu")
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    opts.log_severity_level = 3
    ort.InferenceSession(kernel_graph(k).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert "QLinearConv" in ops and "Relu" not in ops


def test_measure_onnx_protocol_and_bad_arguments():
    model = kernel_graph(Kernel("conv", (8, 8, 8), out_channels=8, kernel_size=3))
    ms = measure_onnx(model, threads=1)
    assert 0 < ms < 1000
    assert measure_onnx(model, clock="thread_cpu", statistic="min") > 0
    with pytest.raises(ValueError, match="warmup=2"):
        measure_onnx(model, warmup=2)
    with pytest.raises(ValueError, match="runs=10"):
        measure_onnx(model, runs=10)
    with pytest.raises(ValueError, match="clock='sundial'"):
        measure_onnx(model, clock="sundial")
    with pytest.raises(ValueError, match="threads=2"):
        measure_onnx(model, threads=2, clock="thread_cpu")
    session = make_session(model)
    assert time_session(session, statistic="min") <= time_session(session, runs=50) * 5


def _tiny_pool() -> dict:
    """Kernels of a tiny two-conv family of models (no torch, no whole models), with their frequencies."""
    pool: dict = {}
    for width in (8, 16, 24):
        for k in (Kernel("conv", (3, 16, 16), out_channels=width, kernel_size=3, activation="relu"),
                  Kernel("conv", (width, 16, 16), out_channels=width, kernel_size=3, groups=width, bits=8),
                  Kernel("global_avgpool", (width, 16, 16))):
            pool[k] = pool.get(k, 0.0) + 1 / 3
    return pool


@pytest.mark.slow
def test_short_real_profile_writes_and_resumes(tmp_path):
    spaces = pytest.importorskip("spaces")
    search = pytest.importorskip("search")
    out = tmp_path / "table.json"
    space = spaces.get_space("mobilenet")
    pool = {**_tiny_pool(), **search.kernel_pool([space], n_per_space=5)}
    models = search.space_models([space])
    t1 = profile(pool, models, device_name="ci", out=out, budget_min=0.12)
    assert out.exists() and len(t1.kernel_rows) > 0 and len(t1.model_rows) >= 1
    assert all(r.latency_ms > 0 for r in t1.kernel_rows + t1.model_rows)
    assert t1.model_rows[0].candidate["space"] == "mobilenet"
    n_kernels = len(t1.kernel_rows)
    budget = t1.extra["spent_s"] / 60 + 0.1  # the budget counts the time already spent: give it more
    t2 = profile(pool, models, device_name="ci", out=out, budget_min=budget)
    assert len(t2.kernel_rows) + len(t2.model_rows) > n_kernels + len(t1.model_rows)
    assert t2.extra["spent_s"] >= t1.extra["spent_s"]
    with pytest.raises(ValueError, match="holds device 'ci'"):
        profile(_tiny_pool(), None, device_name="other", out=out, budget_min=0.1)
    pred = LatencyPredictor.fit(LatencyTable.load(out))
    cand = space.sample(np.random.default_rng(123))
    assert 0 < pred.predict(space.kernels(cand)) < 1000


def test_a_profile_cut_short_holds_a_kernel_of_every_kind_its_pool_has(tmp_path):
    """The first kernels timed are the most frequent one of every (operator, bits) and of every family, so a
    profile that ends after one chunk (a tiny budget, an interrupted run) still covers its space: a search
    refuses a table without its space's (operator, bits) pairs, and a family with no row is a guess."""
    spaces = pytest.importorskip("spaces")
    search = pytest.importorskip("search")
    from latency_models._features import family

    space = spaces.get_space("mobilenet", input_size=16, in_channels=1, num_classes=10)
    pool = search.kernel_pool([space], n_per_space=40)
    table = profile(pool, None, device_name="ci", out=tmp_path / "t.json", budget_min=0.001)
    timed = [r.kernel for r in table.kernel_rows]
    assert len(timed) < len(pool) / 4  # cut short
    assert {(k.op, k.bits) for k in timed} == {(k.op, k.bits) for k in pool}
    assert {family(k) for k in timed} == {family(k) for k in pool}


def test_adaptive_rounds_first_bring_every_family_up_to_the_rows_its_fit_needs():
    from latency_models._features import family
    from latency_models._kernel_model import _MIN_ROWS
    from latency_models._profile import _short_families

    sevens = [Kernel("conv", (c, 16, 16), out_channels=c, kernel_size=7, groups=c, bits=4) for c in range(8, 136, 8)]
    threes = [Kernel("conv", (c, 16, 16), out_channels=c, kernel_size=3, groups=c, bits=4) for c in range(8, 136, 8)]
    measured = [sevens[0], *threes[:_MIN_ROWS]]
    todo = sevens[1:] + threes[_MIN_ROWS:]
    chosen = _short_families(todo, measured)
    assert len(chosen) == _MIN_ROWS - 1 and all(family(k) == "conv_dw_k7/b4" for k in chosen)
    channels = sorted(k.input_shape[0] for k in chosen)
    assert channels[0] == 16 and channels[-1] == 128  # spread over the family's sizes, both ends
    assert _short_families(todo, measured + chosen) == []


def test_kernel_only_profile_of_a_pool(tmp_path):
    t = profile(_tiny_pool(), None, device_name="ci", out=tmp_path / "t.json", budget_min=0.03)
    assert len(t.kernel_rows) >= 1 and not t.model_rows  # no models: no whole models
    assert LatencyTable.load(tmp_path / "t.json").to_dict() == t.to_dict()


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capfd):
    from latency_models import KERNEL_SHARE, OFFGRID_SHARE
    from latency_models._cli import _parser

    assert _parser().parse_args(["profile-workload", "wl", "--out", "t.json"]).offgrid_share == OFFGRID_SHARE
    assert cli_main(["profile-workload", str(tmp_path), "--out", str(tmp_path / "t.json"), "--offgrid-share", "-1"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --offgrid-share -1.0 must be a number in [0, 1)"), err
    assert _parser().parse_args(["profile-workload", "wl", "--out", "t.json"]).kernel_share == KERNEL_SHARE
    assert cli_main(["profile-workload", str(tmp_path), "--out", str(tmp_path / "t.json"), "--kernel-share", "1"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --kernel-share 1; allowed: a share of the budget above 0"), err
    assert not (tmp_path / "t.json").exists()  # nothing timed
    assert cli_main(["evaluate", "--predictor", str(tmp_path / "none.json"), "--measured", "x.json"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --predictor path=")
    assert cli_main(["profile", "--space", "no-such-space", "--device-name", "d", "--out", str(tmp_path / "t.json")]) == 2
    assert "no-such-space" in capfd.readouterr().err


def test_cli_add_models_times_a_users_models_into_a_table_and_refits(tmp_path, capfd):
    """``python -m latency_models add-models TABLE a.onnx b.onnx``: each model's missing kernels and the whole
    model timed into the table, the predictor fitted again next to it; a second call times nothing; bad input is
    one line and exit 2, the table untouched."""
    import onnx

    out = tmp_path / "t.json"
    profile(_tiny_pool(), None, device_name="ci", out=out, budget_min=0.02)
    before = LatencyTable.load(out)
    paths = []
    for c in (12, 20):
        k = Kernel("conv", (8, 12, 12), out_channels=c, kernel_size=3, activation="relu")
        paths.append(tmp_path / f"mine_{c}.onnx")
        onnx.save(kernel_graph(k), paths[-1])
    assert cli_main(["add-models", str(out), *map(str, paths), "--name", "mine12", "--name", "mine20"]) == 0
    printed = capfd.readouterr().out
    assert "+2 model rows" in printed and "2 models outside the spaces" in printed, printed
    table = LatencyTable.load(out)
    assert [r.source for r in table.model_rows] == ["mine12", "mine20"]
    assert {r.kernel.out_channels for r in table.kernel_rows} >= {12, 20} and len(table.kernel_rows) > len(before.kernel_rows)
    pred = LatencyPredictor.load(tmp_path / "t.predictor.json")
    assert pred.fit_info["model_rows"] == 2
    assert cli_main(["add-models", str(out), *map(str, paths), "--name", "mine12", "--name", "mine20"]) == 0
    assert "+0 kernel rows, +0 model rows (all already in the table)" in capfd.readouterr().out
    saved = out.read_text()
    for argv, needle in ((["add-models", str(tmp_path / "none.json"), str(paths[0])], "does not exist: profile"),
                         (["add-models", str(out), str(tmp_path / "none.onnx")], "does not exist; allowed: ONNX files"),
                         (["add-models", str(out), str(paths[0]), "--name", "a", "--name", "b"], "--name given 2")):
        assert cli_main(argv) == 2
        err = capfd.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert out.read_text() == saved


def _squeeze_excitation_teacher():
    """A MobileNetV3-like network at 1 x 16 x 16: hard-swish, an excitation with hard-sigmoid, swish; about as
    slow as the built-in teacher (a model of a few microseconds would be all per-run overhead)."""
    import torch
    from torch import nn

    class SE(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, 1, 1), nn.BatchNorm2d(32), nn.Hardswish())
            self.dw = nn.Sequential(nn.Conv2d(32, 32, 3, 1, 1, groups=32), nn.BatchNorm2d(32), nn.SiLU())
            self.fc1, self.fc2 = nn.Conv2d(32, 8, 1), nn.Conv2d(8, 32, 1)
            self.conv = nn.Sequential(nn.Conv2d(32, 64, 3, 1, 1), nn.BatchNorm2d(64), nn.Hardswish())
            self.head = nn.Linear(64, 10)

        def forward(self, x):
            x = self.dw(self.stem(x))
            x = x * nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
            return self.head(self.conv(x).mean((2, 3)))

    torch.manual_seed(0)
    return SE().eval()


@pytest.mark.parametrize("teacher_kind", ["builtin", "squeeze_excitation"])
def test_profile_models_adds_an_outside_model_once_and_the_predictor_learns_it(tmp_path, teacher_kind):
    """A model outside the profiled space (a plain-convolution teacher; a squeeze-and-excitation one): its
    missing kernels and the whole model are timed into the table; a second call times nothing; the refitted
    predictor is close to it."""
    spaces = pytest.importorskip("spaces")
    search = pytest.importorskip("search")
    from onnx import TensorProto, helper

    from latency_models import kernels_from_onnx, profile_models
    from spaces.compress import export_onnx

    out = tmp_path / "table.json"
    space = spaces.get_space("mobilenet", input_size=16, in_channels=1, num_classes=10)
    search.profile_spaces([space], device_name="ci", out=out, budget_min=0.15, pool_candidates=5)
    before = LatencyTable.load(out)
    module = (spaces.builtin_teacher(in_channels=1, num_classes=10) if teacher_kind == "builtin"
              else _squeeze_excitation_teacher())
    teacher = export_onnx(module, (1, 16, 16))
    kernels, unknown = kernels_from_onnx(teacher)
    assert not unknown
    if teacher_kind == "squeeze_excitation":
        assert "scale" in {k.op for k in kernels}
        assert {k.activation for k in kernels} >= {"hardswish", "swish", "hardsigmoid"}
    missing = {k for k in kernels} - {r.kernel for r in before.kernel_rows}
    assert missing  # the teacher's plain 3x3 convolutions are not in a mobilenet profile

    table = profile_models([teacher], out=out, names=["teacher:x"])
    assert {r.kernel for r in table.kernel_rows} >= set(kernels)
    assert len(table.kernel_rows) == len(before.kernel_rows) + len(missing)
    assert [r.source for r in table.model_rows[len(before.model_rows):]] == ["teacher:x"]
    assert LatencyTable.load(out).to_dict() == table.to_dict()
    assert profile_models([teacher], out=out, names=["teacher:x"]).to_dict() == table.to_dict()  # nothing timed

    measured = table.model_rows[-1].latency_ms
    pred = LatencyPredictor.fit(table).predict(teacher)
    assert abs(pred / measured - 1) < 0.25, (pred, measured)

    with pytest.raises(ValueError, match="does not exist"):
        profile_models([teacher], out=tmp_path / "none.json")
    with pytest.raises(ValueError, match="names has 2 entries for 1 models"):
        profile_models([teacher], out=out, names=["a", "b"])
    odd = helper.make_model(helper.make_graph(
        [helper.make_node("Tanh", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    with pytest.raises(ValueError, match="Tanh"):
        profile_models([odd], out=out, names=["odd"])


def test_a_table_profiled_before_the_memory_probe_is_continued_without_it(tmp_path):
    out = tmp_path / "t.json"
    t1 = profile(_tiny_pool(), None, device_name="ci", out=out, budget_min=0.01)
    assert t1.protocol["memory_probe_mb"] == 16 and all(r.memory_reference_ms for r in t1.kernel_rows)
    # the same table as an older version wrote it: no probe in its protocol, none on its rows
    old = t1.to_dict()
    del old["protocol"]["memory_probe_mb"]
    for row in old["kernel_rows"]:
        row.pop("memory_reference_ms")
    old_table = LatencyTable.from_dict(old)
    old_table.kernel_rows = old_table.kernel_rows[:1]
    old_table.save(out)
    t2 = profile(_tiny_pool(), None, device_name="ci", out=out, budget_min=1.0)
    assert len(t2.kernel_rows) > 1 and "memory_probe_mb" not in t2.protocol
    assert all(r.memory_reference_ms is None for r in t2.kernel_rows)  # timed as the rows it continues
    with pytest.raises(ValueError, match="another protocol"):  # any other difference is still refused
        profile(_tiny_pool(), None, device_name="ci", out=out, budget_min=1.0, timing={"blocks": 3})


def test_kernel_jobs_settle_with_their_own_attempts(tmp_path, monkeypatch):
    """``kernel_settle_attempts`` caps the attempts of the profile's one-kernel jobs alone (1: none); whole-model
    jobs keep ``settle_attempts``; the table records it, and a table written before it existed is continued as
    it was timed (its kernel jobs settled like its model jobs)."""
    import latency_models._profile as prof
    from latency_models import WorkloadModel

    seen: list[tuple[str, int]] = []
    real = prof.measure_interleaved

    def spy(models, **kw):  # noqa: ANN001, ANN003, ANN202
        seen.append(("kernels" if len(models) > 1 else "model", kw["timing"]["settle_attempts"]))
        return real(models, **kw)

    monkeypatch.setattr(prof, "measure_interleaved", spy)
    k = Kernel("conv", (8, 8, 8), out_channels=8, kernel_size=3)
    whole = WorkloadModel(onnx=kernel_graph(k), kernels=(k,), source="one")
    out = tmp_path / "t.json"
    t = profile(_tiny_pool(), lambda j: whole if j == 0 else None, device_name="ci", out=out, budget_min=0.2,
                timing={"kernel_settle_attempts": 1})
    assert t.protocol["kernel_settle_attempts"] == 1 and len(t.model_rows) == 1
    assert ("kernels", 1) in seen and ("model", 8) in seen and ("kernels", 8) not in seen
    # an older table: no such parameter, so its kernel jobs are continued with settle_attempts, as they were
    old = t.to_dict()
    del old["protocol"]["kernel_settle_attempts"]
    old["kernel_rows"] = old["kernel_rows"][:1]
    old["model_rows"] = []
    LatencyTable.from_dict(old).save(out)
    seen.clear()
    t2 = profile(_tiny_pool(), None, device_name="ci", out=out, budget_min=1.0)
    assert "kernel_settle_attempts" not in t2.protocol and len(t2.kernel_rows) > 1
    assert seen and all(s == ("kernels", 8) for s in seen)
    for bad in (0, True, 2.5, "1"):
        with pytest.raises(ValueError, match="kernel_settle_attempts"):
            profile(_tiny_pool(), None, device_name="ci", out=tmp_path / "bad.json", budget_min=0.1,
                    timing={"kernel_settle_attempts": bad})


def test_offgrid_variants_are_the_pools_float_kernels_at_widths_off_the_multiples_of_8():
    spaces = pytest.importorskip("spaces")
    search = pytest.importorskip("search")
    from latency_models._features import family
    from latency_models._profile import offgrid_variants

    pool = search.kernel_pool([spaces.get_space(s, input_size=32) for s in ("mobilenet", "shufflenet")], n_per_space=20)
    off = offgrid_variants(pool)
    assert off == offgrid_variants(pool) and off != offgrid_variants(pool, seed=1)  # deterministic in the seed
    assert len(off) > 0.5 * sum(k.bits == 32 and k.op != "linear" for k in pool)
    assert not set(off) & set(pool) and all(k.bits == 32 and w > 0 for k, w in off.items())
    pool_families = {family(k) for k in pool}
    for k in off:
        assert family(k) in pool_families
        c = k.input_shape[0]
        if k.op == "conv":
            cout = k.out_channels or c
            assert c % 8 or cout % 8
            assert k.groups == 1 or (c % k.groups == 0 and cout % k.groups == 0)
        else:
            assert c % 8 and c % k.groups == 0  # a split or shuffle still divides into its groups
    def kinds(ks):
        return {family(k).split("_")[1] for k in ks if k.op == "conv" and k.bits == 32}

    assert kinds(off) == kinds(pool) and kinds(off) >= {"dense", "dw"}
    assert {k.op for k in off} >= {"split", "channel_shuffle", "concat", "add"}


def test_a_profile_spends_a_share_of_its_rounds_on_offgrid_widths_unless_told_not_to(tmp_path):
    pool = _tiny_pool()  # 9 kernels: the first batch times them all, the rounds after it only off-grid ones
    t = profile(pool, None, device_name="ci", out=tmp_path / "t.json", budget_min=0.05)
    extra = [r.kernel for r in t.kernel_rows if r.kernel not in pool]
    assert extra and all(k.bits == 32 and (k.input_shape[0] % 8 or k.out_channels % 8) for k in extra)
    t0 = profile(pool, None, device_name="ci", out=tmp_path / "t0.json", budget_min=0.05, offgrid_share=0)
    assert {r.kernel for r in t0.kernel_rows} <= set(pool)
    for bad in (1.0, -0.1, True, "0.1"):
        with pytest.raises(ValueError, match="offgrid_share="):
            profile(pool, None, device_name="ci", out=tmp_path / "t1.json", budget_min=0.05, offgrid_share=bad)


def test_a_profile_spends_its_kernel_share_of_the_budget_on_kernels_and_rejects_a_share_out_of_range(tmp_path):
    from latency_models import KERNEL_SHARE, WorkloadModel

    ks = [Kernel("conv", (8, 12, 12), out_channels=8 * (1 + j % 3), kernel_size=1 + 2 * (j % 2)) for j in range(4)]
    whole = [WorkloadModel(onnx=kernel_graph(k), kernels=(k,), source=f"m{j}") for j, k in enumerate(ks)]
    assert 0 < KERNEL_SHARE < 1
    for bad in (0, 1.0, -0.1, True, "0.5"):
        with pytest.raises(ValueError, match="kernel_share=.*allowed: a share of the budget above 0 and below 1"):
            profile(_tiny_pool(), lambda j: whole[j] if j < len(whole) else None, device_name="ci",
                    out=tmp_path / "bad.json", budget_min=0.05, kernel_share=bad)
    assert not (tmp_path / "bad.json").exists()  # nothing timed
    # a kernel phase that runs out of kernels hands its minutes on to the whole models
    t = profile(_tiny_pool(), lambda j: whole[j] if j < len(whole) else None, device_name="ci", out=tmp_path / "t.json",
                budget_min=0.5, offgrid_share=0, kernel_share=0.9)
    assert {r.kernel for r in t.kernel_rows} == set(_tiny_pool()) and len(t.model_rows) == len(whole)


def test_profile_workload_hands_its_shares_to_the_profile(tmp_path, monkeypatch, capsys):
    import latency_models._workload as wl
    from latency_models import KERNEL_SHARE, OFFGRID_SHARE, WorkloadModel, write_workload

    k = Kernel("conv", (8, 12, 12), out_channels=8, kernel_size=3)
    write_workload(tmp_path / "w", _tiny_pool(), [WorkloadModel(onnx=kernel_graph(k), kernels=(k,), source="m0")])
    seen: list[dict] = []

    def fake_profile(pool, next_model, **kw):  # noqa: ANN001, ANN202 - records what the workload asked for
        seen.append(kw)
        raise SystemExit(0)

    monkeypatch.setattr(wl, "profile", fake_profile)
    for argv, shares in (([], (KERNEL_SHARE, OFFGRID_SHARE)),
                         (["--kernel-share", "0.6", "--offgrid-share", "0"], (0.6, 0.0))):
        with pytest.raises(SystemExit):
            cli_main(["profile-workload", str(tmp_path / "w"), "--out", str(tmp_path / "t.json"), *argv])
        assert (seen[-1]["kernel_share"], seen[-1]["offgrid_share"]) == shares


def test_a_profile_times_its_first_models_again_and_records_its_noise_floor(tmp_path, capsys):
    from latency_models import WorkloadModel

    ks = [Kernel("conv", (8, 12, 12), out_channels=8 * (1 + j % 3), kernel_size=1 + 2 * (j % 2)) for j in range(10)]
    whole = [WorkloadModel(onnx=kernel_graph(k), kernels=(k,), source=f"m{j}") for j, k in enumerate(ks)]
    out = tmp_path / "t.json"
    t = profile(_tiny_pool(), lambda j: whole[j] if j < len(whole) else None, device_name="ci", out=out,
                budget_min=0.5, offgrid_share=0)
    assert len(t.model_rows) == 10
    floor = t.extra["noise_floor"]
    assert floor["models"] == 8 and floor["model_rows"] == 10
    for key in ("as_measured", "on_reference_scale"):
        s = floor[key]
        assert s["pairs"] == 8 and 0 <= s["within_2"] <= s["within_5"] <= s["within_10"] <= 1 and s["max_abs"] >= 0
    assert LatencyTable.load(out).extra["noise_floor"] == floor  # saved with the table
    pred = LatencyPredictor.fit(t)
    assert pred.fit_info["noise_floor"] == floor  # and carried by its predictor, which evaluate prints
    assert cli_main(["evaluate", "--predictor", str(out), "--measured", str(out)]) == 0
    assert "noise floor: the profile's first 8 calibration models, timed again at its end" in capsys.readouterr().out


def test_a_profile_records_no_floor_from_too_few_models_or_models_that_changed(tmp_path, caplog):
    from latency_models import WorkloadModel

    ks = [Kernel("conv", (8, 12, 12), out_channels=8 * (1 + j % 3), kernel_size=3) for j in range(9)]
    whole = [WorkloadModel(onnx=kernel_graph(k), kernels=(k,), source=f"m{j}") for j, k in enumerate(ks)]
    few = profile(_tiny_pool(), lambda j: whole[j] if j < 5 else None, device_name="ci", out=tmp_path / "a.json",
                  budget_min=0.5, offgrid_share=0)
    assert len(few.model_rows) == 5 and "noise_floor" not in few.extra
    calls: dict[int, int] = {}

    def unstable(j: int):  # noqa: ANN202 - a second call for the same j gives another model
        calls[j] = calls.get(j, 0) + 1
        return None if j >= 8 else whole[j] if calls[j] == 1 else whole[8]

    changed = profile(_tiny_pool(), unstable, device_name="ci", out=tmp_path / "b.json", budget_min=0.5,
                      offgrid_share=0)
    assert len(changed.model_rows) == 8 and "noise_floor" not in changed.extra
    assert "noise floor not measured" in caplog.text
