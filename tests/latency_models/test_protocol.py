"""The timing protocol karumi-interleaved/3: worker process, reference workload, one scale."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from latency_models import (PROTOCOL_NAME, Kernel, LatencyTable, Timing, kernel_graph, measure_interleaved,
                            reference_model)
from latency_models._protocol import WORKER_PATH, protocol_params
from latency_models._table import default_protocol, device_info, timing_params


def test_worker_times_models_with_only_onnxruntime_and_numpy_loaded(tmp_path):
    ref = tmp_path / "ref.onnx"
    ref.write_bytes(reference_model().SerializeToString())
    small = tmp_path / "k.onnx"
    small.write_bytes(kernel_graph(Kernel("conv", (8, 16, 16), out_channels=8, kernel_size=3)).SerializeToString())
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"models": [str(small), str(ref)], "reference": str(ref), "blocks": 3}))
    out = tmp_path / "out.json"
    subprocess.run([sys.executable, "-I", str(WORKER_PATH), str(job), str(out)], check=True, timeout=120)
    res = json.loads(out.read_text())
    assert res["protocol"] == PROTOCOL_NAME
    assert set(res["loaded"]) <= {"numpy", "onnxruntime", "cython_runtime"}, res["loaded"]
    assert len(res["latency_ms"]) == 2 and all(ms > 0 for ms in res["latency_ms"])
    assert min(res["runs"]) >= 3 * 3  # blocks x min_runs
    # the reference timed as a model and as the reference in the same blocks: the same figure within 30 %
    assert abs(res["latency_ms"][1] / res["reference_ms"] - 1) < 0.3


def test_measure_interleaved_paths_and_protos_and_bad_input(tmp_path):
    k = Kernel("conv", (16, 16, 16), out_channels=32, kernel_size=3)
    path = tmp_path / "m.onnx"
    path.write_bytes(kernel_graph(k).SerializeToString())
    res = measure_interleaved([kernel_graph(k), str(path)], timing={"blocks": 2})
    assert len(res) == 2 and all(isinstance(t, Timing) and t.latency_ms > 0 for t in res)
    assert res[0].reference_ms == res[1].reference_ms > 0
    assert measure_interleaved([]) == []
    with pytest.raises(ValueError, match="does not exist"):
        measure_interleaved([tmp_path / "nope.onnx"])
    with pytest.raises(ValueError, match="models\\[0\\]"):
        measure_interleaved([42])
    with pytest.raises(ValueError, match="quantile"):
        measure_interleaved([str(path)], timing={"quantile": 0.9})
    with pytest.raises(ValueError, match="sundial"):
        protocol_params({"sundial": 1})
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ValueError, match="timing worker failed"):
        measure_interleaved([bad])


def test_rows_carry_the_reference_and_the_table_puts_them_on_one_scale(tmp_path):
    t = LatencyTable(device=device_info(name="x"))
    k = Kernel("conv", (8, 8, 8), out_channels=8)
    t.add_kernel(k, 1.0, reference_ms=0.5)
    t.add_model([k], 4.0, reference_ms=1.0)  # the machine ran twice as slow when this row was taken
    t.add_model([k], 3.0, reference_ms=0.5)
    t.save(tmp_path / "t.json")
    back = LatencyTable.load(tmp_path / "t.json")
    assert [r.reference_ms for r in back.model_rows] == [1.0, 0.5]
    assert back.reference_ms == 0.5
    scaled = back.on_reference_scale()
    assert [r.latency_ms for r in scaled.model_rows] == [2.0, 3.0]
    assert scaled.kernel_rows[0].latency_ms == 1.0
    assert scaled.extra["reference_scaled_to_ms"] == 0.5 and scaled.extra["reference_exponent"] == 1.0
    # latencies that follow the reference more than in proportion: (0.5 / 1.0) ** 2 of the first row
    assert [r.latency_ms for r in back.on_reference_scale(exponent=2).model_rows] == [1.0, 3.0]
    assert [r.latency_ms for r in back.on_reference_scale(exponent=0).model_rows] == [4.0, 3.0]
    with pytest.raises(ValueError, match="exponent"):
        back.on_reference_scale(exponent=float("inf"))
    with pytest.raises(ValueError, match="reference_ms"):
        LatencyTable.from_dict({**back.to_dict(), "model_rows": [{**back.to_dict()["model_rows"][0],
                                                                 "reference_ms": -1}]})


def test_a_table_of_the_old_protocol_is_not_continued():
    assert timing_params(LatencyTable(device=device_info(name="x")).protocol)["quantile"] == 0.2
    with pytest.raises(ValueError, match="profile the device again"):
        timing_params({"warmup_runs": 10, "timed_runs": 50, "statistic": "median"})


def _worker(tmp_path, **job):
    ref = tmp_path / "ref.onnx"
    ref.write_bytes(reference_model().SerializeToString())
    small = tmp_path / "k.onnx"
    small.write_bytes(kernel_graph(Kernel("conv", (8, 16, 16), out_channels=8, kernel_size=3)).SerializeToString())
    path, out = tmp_path / "job.json", tmp_path / "out.json"
    path.write_text(json.dumps({"models": [str(small)], "reference": str(ref), "blocks": 2, **job}))
    subprocess.run([sys.executable, "-I", str(WORKER_PATH), str(path), str(out)], check=True, timeout=120)
    return json.loads(out.read_text())


def test_worker_settles_a_slow_reference_and_keeps_the_fastest_attempt(tmp_path):
    # a floor no attempt reaches: every attempt is made and the one with the fastest reference is kept
    res = _worker(tmp_path, reference_floor_ms=1e-6, settle_attempts=3)
    refs = res["attempt_references_ms"]
    assert len(refs) == 3 and len(res["attempt_latency_ms"]) == 3
    assert res["reference_ms"] == min(refs) == refs[res["kept_attempt"]]
    assert res["latency_ms"] == res["attempt_latency_ms"][res["kept_attempt"]]
    # a floor every attempt reaches: one attempt
    assert len(_worker(tmp_path, reference_floor_ms=1e6)["attempt_references_ms"]) == 1
    # no floor known: a second attempt to compare with, at most settle_attempts
    assert 2 <= len(_worker(tmp_path, settle_attempts=4)["attempt_references_ms"]) <= 4
    # settle_attempts=1: no settling (the /2 protocol's single attempt)
    assert len(_worker(tmp_path, settle_attempts=1)["attempt_references_ms"]) == 1


def _spy_jobs(monkeypatch) -> list[dict]:
    """The job files the host writes for the worker, as they are run (the list fills as jobs run)."""
    from latency_models import _protocol

    jobs = []
    real_run = subprocess.run

    def spy(cmd, **kw):
        jobs.append(json.loads(open(cmd[-2]).read()))
        return real_run(cmd, **kw)

    monkeypatch.setattr(_protocol.subprocess, "run", spy)
    return jobs


def test_the_host_passes_its_recent_fastest_reference_as_the_floor(tmp_path, monkeypatch):
    from latency_models import _protocol

    monkeypatch.setattr(_protocol, "_recent", {})
    path = tmp_path / "m.onnx"
    path.write_bytes(kernel_graph(Kernel("conv", (8, 16, 16), out_channels=8)).SerializeToString())
    first = measure_interleaved([str(path)], timing={"blocks": 2})[0]
    assert len(first.attempt_references_ms) >= 2  # no floor yet in this process
    assert first.reference_ms == min(first.attempt_references_ms) and first.first_attempt_ms > 0
    assert len(first.attempt_latency_ms) == len(first.attempt_references_ms)
    kept = first.attempt_references_ms.index(first.reference_ms)
    assert first.latency_ms == first.attempt_latency_ms[kept] and first.first_attempt_ms == first.attempt_latency_ms[0]
    (floors,) = _protocol._recent.values()
    assert floors == [first.reference_ms]
    jobs = _spy_jobs(monkeypatch)
    for _ in range(_protocol._FLOOR_JOBS + 2):
        measure_interleaved([str(path)], timing={"blocks": 1, "settle_attempts": 1})
    assert jobs[0]["reference_floor_ms"] == first.reference_ms
    (floors,) = _protocol._recent.values()
    assert len(floors) == _protocol._FLOOR_JOBS  # only recent jobs: a machine that drifts slower is not held back
    before = list(floors)
    measure_interleaved([str(path)], timing={"blocks": 1, "settle_attempts": 1})
    assert jobs[-1]["reference_floor_ms"] == min(before)
    with pytest.raises(ValueError, match="settle_attempts"):
        protocol_params({"settle_attempts": 0})
    with pytest.raises(ValueError, match="settle_tolerance"):
        protocol_params({"settle_tolerance": -0.1})


def test_the_memory_probe_is_timed_beside_every_model_and_recorded_on_rows(tmp_path):
    res = _worker(tmp_path, settle_attempts=2, reference_floor_ms=1e-6)
    probes = res["attempt_memory_references_ms"]
    assert res["params"]["memory_probe_mb"] == 16 and len(probes) == 2 and all(ms > 0 for ms in probes)
    assert res["memory_reference_ms"] == probes[res["kept_attempt"]]  # the kept attempt's, beside its latencies
    assert len(res["latency_ms"]) == 1  # the probe is not reported as a model
    assert set(res["loaded"]) <= {"numpy", "onnxruntime", "cython_runtime"}, res["loaded"]
    # the probe's work grows with its size: 64 MiB of weights read per run against 1 MiB
    small = _worker(tmp_path, memory_probe_mb=1, settle_attempts=1)["memory_reference_ms"]
    large = _worker(tmp_path, memory_probe_mb=64, settle_attempts=1)["memory_reference_ms"]
    assert large > 8 * small, (small, large)
    off = _worker(tmp_path, memory_probe_mb=0, settle_attempts=1)
    assert off["memory_reference_ms"] is None and off["attempt_memory_references_ms"] == []
    with pytest.raises(ValueError, match="memory_probe_mb"):
        protocol_params({"memory_probe_mb": -1})
    # through the host: each Timing carries it, a profile's rows record it and a table keeps it
    k = Kernel("conv", (8, 16, 16), out_channels=8)
    (t,) = measure_interleaved([kernel_graph(k)], timing={"blocks": 2})
    assert t.memory_reference_ms and len(t.attempt_memory_references_ms) == len(t.attempt_references_ms)
    table = LatencyTable(device=device_info(name="x"))
    table.add_kernel(k, t.latency_ms, reference_ms=t.reference_ms, memory_reference_ms=t.memory_reference_ms)
    table.add_model([k], 2.0, reference_ms=0.5, memory_reference_ms=0.3)
    table.save(tmp_path / "t.json")
    back = LatencyTable.load(tmp_path / "t.json")
    assert back.kernel_rows[0].memory_reference_ms == t.memory_reference_ms
    assert back.model_rows[0].memory_reference_ms == 0.3
    assert back.on_reference_scale().model_rows[0].memory_reference_ms == 0.3  # the compute scale leaves it
    with pytest.raises(ValueError, match="memory_reference_ms"):
        LatencyTable.from_dict({**back.to_dict(), "model_rows": [{**back.to_dict()["model_rows"][0],
                                                                 "memory_reference_ms": "slow"}]})
    # a table profiled before the probe is continued without it (its rows stay comparable); a new one has it
    old = {k: v for k, v in LatencyTable(device=device_info(name="x")).protocol.items() if k != "memory_probe_mb"}
    assert timing_params(old)["memory_probe_mb"] == 0
    assert timing_params(LatencyTable(device=device_info(name="x")).protocol)["memory_probe_mb"] == 16


def test_a_job_holding_a_heavy_model_settles_on_the_memory_probe_too(tmp_path, monkeypatch):
    # a memory floor no attempt reaches, a reference floor every attempt reaches: only the probe keeps the job going
    slow = dict(reference_floor_ms=1e6, memory_floor_ms=1e-6, settle_attempts=3)
    res = _worker(tmp_path, memory_settle_mb=0, memory_settle_tolerance=0.05, **slow)  # every file counts as heavy
    refs, probes, kept = res["attempt_references_ms"], res["attempt_memory_references_ms"], res["kept_attempt"]
    assert res["memory_settled"] and len(refs) == len(probes) == 3
    near = [a for a in range(3) if refs[a] <= (1 + res["params"]["settle_tolerance"]) * min(refs)]
    assert kept in near and probes[kept] == min(probes[a] for a in near)  # the fastest memory state of the fast ones
    assert res["memory_reference_ms"] == probes[kept] and res["latency_ms"] == res["attempt_latency_ms"][kept]
    # a model file below memory_settle_mb (the default 8 MiB; this one has a few kilobytes), or settling off
    for job in ({"memory_settle_tolerance": 0.05}, {"memory_settle_mb": 0, "memory_settle_tolerance": None},
                {"memory_settle_mb": 0, "memory_probe_mb": 0, "memory_settle_tolerance": 0.05}):
        res = _worker(tmp_path, **slow, **job)
        assert not res["memory_settled"] and len(res["attempt_references_ms"]) == 1, job
    # a memory floor every attempt reaches: one attempt
    res = _worker(tmp_path, reference_floor_ms=1e6, memory_floor_ms=1e6, memory_settle_mb=0,
                  memory_settle_tolerance=0.05)
    assert res["memory_settled"] and len(res["attempt_references_ms"]) == 1
    # the host passes the fastest kept probe of its recent jobs as the floor, and says the job settled on it
    from latency_models import _protocol

    monkeypatch.setattr(_protocol, "_recent", {})
    monkeypatch.setattr(_protocol, "_recent_memory", {})
    jobs = _spy_jobs(monkeypatch)
    graph = kernel_graph(Kernel("conv", (8, 16, 16), out_channels=8))
    on = {"blocks": 1, "memory_settle_mb": 0, "memory_settle_tolerance": 0.05}
    first, second = (measure_interleaved([graph], timing=on)[0] for _ in range(2))
    assert jobs[0]["memory_floor_ms"] is None and jobs[1]["memory_floor_ms"] == first.memory_reference_ms
    assert first.memory_settled and second.memory_settled
    assert not measure_interleaved([graph], timing={"blocks": 1})[0].memory_settled  # off by default
    assert not measure_interleaved([graph], timing={"blocks": 1, "memory_settle_tolerance": 0.05})[0].memory_settled
    for bad in ({"memory_settle_tolerance": -0.1}, {"memory_settle_tolerance": "5%"}, {"memory_settle_mb": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            protocol_params(bad)
    # a table timed before the setting existed is continued without it; one timed with it, with it
    old = {k: v for k, v in LatencyTable(device=device_info(name="x")).protocol.items()
           if not k.startswith("memory_settle")}
    assert timing_params(old)["memory_settle_tolerance"] is None
    table = LatencyTable(device=device_info(name="x"), protocol=default_protocol(memory_settle_tolerance=0.05))
    assert timing_params(table.protocol)["memory_settle_tolerance"] == 0.05
