"""The Ray Tune sweep on a real multi-node Ray test cluster (one head, two worker nodes on loopback).

A worker node is removed while it runs a trial: the sweep must still finish every trial, retrying the
one that died with the node.
"""

from __future__ import annotations

import pathlib
import sys
import threading
import time
from typing import Any

import numpy as np
import optuna
import pytest

from spaces import Candidate

ray = pytest.importorskip("ray")

NUM_SAMPLES = 8
BUDGET_MS = 6.0


# ----------------------------------------------------------------------------- a small real objective
class ToySpace:
    """Width, one prune ratio and one bit width; latency and size follow from them."""

    name = "toy"

    def sample(self, trial: Any, *, search: str = "joint") -> Candidate:
        width = trial.suggest_categorical("width", [4, 8, 16, 32, 64])
        ratio = trial.suggest_float("layer/0/prune", 0.0, 0.75) if search in ("joint", "prune") else 0.0
        bits = trial.suggest_categorical("layer/0/bits", [8, 32]) if search in ("joint", "quant") else 32
        return Candidate(space="toy", genes={"width": width}, prune_ratios=(ratio,), bits=(bits,))


class Result:
    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


def evaluate(candidate: Candidate, *, context: dict[str, Any]) -> Result:
    """Nearest-centroid classifier on the first ``kept`` features: cheap, real and budget-aware."""
    start = time.perf_counter()
    marker = pathlib.Path(context["markers"]) / f"{time.time_ns()}.running"
    marker.write_text(f"{ray.get_runtime_context().get_node_id()}\n{candidate.to_json()}")
    try:
        kept = max(1, int(round(candidate.genes["width"] * (1.0 - candidate.prune_ratios[0]))))
        latency_ms = 0.1 * kept * candidate.bits[0] / 8.0
        size_bytes = kept * context["x"].shape[1] * candidate.bits[0] / 8.0
        if latency_ms > context["budget_ms"]:
            return Result(accuracy=0.0, latency_ms=latency_ms, size_bytes=size_bytes, feasible=False, trained=False,
                          seconds=time.perf_counter() - start)
        time.sleep(context["sleep_s"])  # long enough for the test to take a node away mid-trial
        x, y = context["x"][:, :kept], context["y"]
        centroids = np.stack([x[y == c].mean(axis=0) for c in range(10)])
        pred = np.argmin(((x[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
        return Result(accuracy=float((pred == y).mean()), latency_ms=latency_ms, size_bytes=size_bytes,
                      feasible=True, trained=True, seconds=time.perf_counter() - start)
    finally:
        marker.unlink()


def feasibility(trial: optuna.trial.FrozenTrial) -> list[float]:
    """Optuna constraint: <= 0 is feasible (reads the user attributes the Ray searcher records)."""
    return [trial.user_attrs["latency_ms"] - BUDGET_MS]


def _context(markers: pathlib.Path) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 30)
    x = rng.normal(size=(300, 64)) + y[:, None] * np.linspace(0.0, 1.0, 64)[None]
    return {"x": x, "y": y, "budget_ms": BUDGET_MS, "sleep_s": 2.0, "markers": str(markers)}


# ----------------------------------------------------------------------------- the cluster test
@pytest.mark.slow
def test_sweep_survives_losing_a_worker_node(tmp_path: pathlib.Path) -> None:
    import ray.cloudpickle
    from ray.cluster_utils import Cluster

    from search._ray import ray_sweep

    # the workers cannot import this test module: ship its objective and space by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    markers = tmp_path / "markers"
    markers.mkdir()
    # head without CPUs (trials run on the workers only); a dead node is noticed within a few seconds
    head = {"num_cpus": 0, "_system_config": {
        "health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_timeout_ms": 500,
        "health_check_failure_threshold": 3}}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        removed: dict[str, str] = {}

        def kill_a_busy_node() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not removed:
                busy = [m.read_text().split("\n")[0] for m in markers.glob("*.running") if m.exists()]
                for node in workers:
                    if node.node_id in busy:
                        cluster.remove_node(node, allow_graceful=False)
                        removed["node"] = node.node_id
                        return
                time.sleep(0.2)

        killer = threading.Thread(target=kill_a_busy_node, daemon=True)
        killer.start()
        sweep = ray_sweep(
            space=ToySpace(), evaluate=evaluate, context=_context(markers),
            sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=4, constraints_func=feasibility),
            trials=NUM_SAMPLES, workers=2, out_dir=tmp_path / "run", address="auto", max_failures=3,
        )
        killer.join(timeout=5)
    finally:
        ray.shutdown()
        cluster.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])

    assert removed, "no worker node was removed while running a trial"
    assert sweep.errors == []
    assert [t.number for t in sweep.trials] == list(range(NUM_SAMPLES))
    # the trial(s) that died with the node left their marker behind; each was retried and finished
    died = [Candidate.from_json(m.read_text().split("\n", 1)[1]) for m in markers.glob("*.running")]
    assert len(died) == 1, f"one trial ran on the removed node (1 CPU), {len(died)} died"
    assert all(any(t.candidate == c and t.trained for t in sweep.trials) for c in died)
    space = ToySpace()
    for trial in sweep.trials:
        assert trial.candidate == space.sample(optuna.trial.FixedTrial(trial.params))
        assert trial.feasible == (trial.latency_ms <= BUDGET_MS)
        assert trial.trained == trial.feasible
        if trial.feasible:
            assert 0.1 <= trial.accuracy <= 1.0
        else:
            assert trial.accuracy == 0.0
    assert (sweep.path / "tuner.pkl").exists()


# ----------------------------------------------------------------------------- the whole search on the cluster
def _running_trials(sweep_dir: pathlib.Path) -> int:
    """Trials Tune has started whose result is not in yet (their folder exists, ``result.json`` is empty)."""
    running = 0
    for folder in sweep_dir.glob("trial-*"):
        result = folder / "result.json"
        if not result.exists() or result.stat().st_size == 0:
            running += 1
    return running


@pytest.mark.slow
def test_search_run_on_cluster_survives_losing_a_worker_node(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
                                                             tiny_teacher: pathlib.Path) -> None:
    """``search.run(ray_address=...)`` on a head and two 1-CPU worker nodes; a worker node is removed
    while both run a trial. Every trial finishes in the run's study and the standard outputs are written."""
    import json

    from ray.cluster_utils import Cluster

    import search
    from search._ray import ray_experiment_dir

    monkeypatch.setenv("KARUMI_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    trials = 6
    head = {"num_cpus": 0, "_system_config": {
        "health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_timeout_ms": 500,
        "health_check_failure_threshold": 3}}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    removed: list[str] = []
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)

        def kill_a_busy_node() -> None:  # both workers busy: the removed node takes a running trial with it
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                if _running_trials(ray_experiment_dir(out)) >= 2:
                    cluster.remove_node(workers[0], allow_graceful=False)
                    removed.append(workers[0].node_id)
                    return
                time.sleep(0.2)

        killer = threading.Thread(target=kill_a_busy_node, daemon=True)
        killer.start()
        result = search.run(budget_ms=50.0, trials=trials, out=out, ray_address="auto", workers=2,
                            teacher=str(tiny_teacher), proxy_epochs=1, proxy_samples=64, final_epochs=0, profile_min=0.1)
        killer.join(timeout=5)
    finally:
        ray.shutdown()
        cluster.shutdown()

    assert removed, "no worker node was removed while trials were running"
    assert not result.interrupted
    # every trial accounted for: numbers 0..n-1, all complete, none failed, all of this run
    study = optuna.load_study(study_name="karumi", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.number for t in study.trials] == list(range(trials))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * trials
    assert len({t.user_attrs["run_id"] for t in study.trials}) == 1
    for t in study.trials:
        assert t.values == [t.user_attrs[k] for k in ("accuracy", "latency_ms", "size_bytes")]
        assert t.user_attrs["trained"] and t.user_attrs["feasible"]  # 50 ms is far above every candidate
        assert 0.0 <= t.user_attrs["accuracy"] <= 1.0
        assert Candidate.from_dict(t.user_attrs["candidate"]).space == "mobilenet"
    # the standard outputs of the single-machine search
    for name in ("pareto.json", "pareto.csv", "pareto.png", "report.md", "best/model.onnx", "best/candidate.json"):
        assert (out / name).is_file(), name
    pareto = json.loads((out / "pareto.json").read_text())
    assert pareto["n_trials"] == trials
    assert {e["trial"] for e in pareto["pareto"]} <= set(range(trials))
    assert result.trials_finished == trials
    assert "--ray-address auto --workers 2" in (out / "report.md").read_text()
