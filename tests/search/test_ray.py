"""The Ray Tune sweep on a real multi-node Ray test cluster (one head, two worker nodes on this machine).

A worker node is removed while it runs a trial: the sweep must still finish every trial, retrying the
one that died with the node, and write the standard outputs.
"""

from __future__ import annotations

import json
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
        # trials are held to the teacher's latency (it meets the 50 ms): trained exactly when within that
        assert t.user_attrs["trained"] == t.user_attrs["feasible"]
        assert t.user_attrs["feasible"] == (t.user_attrs["latency_ms"] <= pareto_budget(out))
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


def pareto_budget(out: pathlib.Path) -> float:
    """The budget the run's trials were held to (``search_budget_ms`` of ``pareto.json``)."""
    return float(json.loads((out / "pareto.json").read_text())["search_budget_ms"])


@pytest.mark.slow
def test_killed_ray_run_resumes_with_tuner_restore(tmp_path: pathlib.Path, tiny_teacher: pathlib.Path) -> None:
    """A Ray run killed outright (driver and its local Ray) continues with ``--resume``: Ray Tune's
    experiment is restored, the finished trials keep their results and every trial ends complete."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from search._ray import ray_experiment_dir

    out, trials = tmp_path / "run", 4
    env = {**os.environ, "KARUMI_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "search", "--budget-ms", "50", "--trials", str(trials), "--out", str(out),
           "--teacher", str(tiny_teacher), "--proxy-epochs", "1", "--proxy-samples", "64", "--final-epochs", "0",
           "--profile-min", "0.1", "--ray-address", "local", "--workers", "1", "-q"]
    db = f"sqlite:///{out / 'study.db'}"

    def complete(after_kill: bool = False) -> dict[int, list[float]]:
        """The run's complete trials, read from its SQLite file read-only: opening it through Optuna while the
        run creates it races the run's own schema set-up (both stamp the alembic version). ``after_kill``: no
        writer is left, and a run killed inside a transaction leaves a hot journal that only a read-write
        connection rolls back (a read-only one fails, which would read as no trials)."""
        import sqlite3

        path = out / "study.db"
        if not path.is_file():
            return {}
        try:
            con = (sqlite3.connect(str(path), timeout=30.0) if after_kill else
                   sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0))
            try:
                rows = con.execute("SELECT t.number, v.objective, v.value FROM trials t JOIN trial_values v "
                                   "ON v.trial_id = t.trial_id WHERE t.state = 'COMPLETE'").fetchall()
            finally:
                con.close()
        except sqlite3.OperationalError:  # the schema is not created yet, or the file is busy
            return {}
        values: dict[int, dict[int, float]] = {}
        for number, objective, value in rows:
            values.setdefault(int(number), {})[int(objective)] = value
        return {n: [v[k] for k in sorted(v)] for n, v in values.items()}

    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and first.poll() is None and len(complete()) < 1:
            time.sleep(0.5)
        assert first.poll() is None, "the run ended before it could be killed"
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        first.wait()
    before = complete(after_kill=True)
    assert 1 <= len(before) < trials

    resumed = subprocess.run([sys.executable, "-m", "search", "--resume", str(out), "-q"], env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = complete()
    assert len(after) == trials
    assert {n: after[n] for n in before} == before  # no finished trial lost or changed
    # a trial running at the kill either ran again in the restored experiment (it was in Tune's last
    # checkpoint) or is marked failed and replaced; none is left running
    study = optuna.load_study(study_name="karumi", storage=db)
    others = [t for t in study.trials if t.state != optuna.trial.TrialState.COMPLETE]
    assert all(t.state == optuna.trial.TrialState.FAIL and t.number not in before for t in others)
    assert len(list(ray_experiment_dir(out).glob("experiment_state-*.json"))) == 2  # restored, not restarted
    assert json.loads((out / "pareto.json").read_text())["n_trials"] == trials
