"""The Ray Tune sweep on a real multi-node Ray test cluster (one head, two worker nodes on this machine).

A worker node is removed while it runs a trial: the sweep must still finish every trial, retrying the
one that died with the node, and write the standard outputs.
"""

from __future__ import annotations

import pathlib
import threading
import time

import optuna
import pytest

from spaces import Candidate

ray = pytest.importorskip("ray")


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
