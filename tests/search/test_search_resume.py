"""Interrupted runs: killed outright (SIGKILL) and resumed with ``--resume`` without losing a finished trial;
stopped with Ctrl-C (SIGINT), which writes the results so far."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import time

import pytest

from _search_helpers import (  # noqa: F401  (fixtures)
    completed_trials,
    mobilenet_table,
    popen_cli,
    read_json,
    run_cli,
    search_cache,
    tiny_args,
)

TRIALS = 5


def _start_and_wait(out: pathlib.Path, table: pathlib.Path, cache: pathlib.Path, finished: int) -> tuple[subprocess.Popen[str], dict[int, tuple[float, ...]]]:
    """Start a run and return once at least ``finished`` trials are committed to its study."""
    args = ["--budget-ms", "20", "--device", str(table), "--out", str(out),
            *tiny_args(trials=TRIALS)]
    proc = popen_cli(args, env_cache=cache)
    deadline = time.monotonic() + 900
    while True:
        done = completed_trials(out / "study.db")
        if len(done) >= finished:
            return proc, done
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {finished} trials: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the run did not finish two trials in 15 minutes")
        time.sleep(0.2)


@pytest.mark.slow
def test_sigkill_then_resume_loses_no_finished_trial(tmp_path, search_cache, mobilenet_table):
    out = tmp_path / "run"
    proc, _ = _start_and_wait(out, mobilenet_table, search_cache, finished=2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    before = completed_trials(out / "study.db", after_kill=True)
    assert 2 <= len(before) < TRIALS
    assert not (out / "pareto.json").exists()  # killed outright: nothing was written at the end

    resumed = run_cli(["-q", "--resume", str(out)], env_cache=search_cache, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    after = completed_trials(out / "study.db")
    for number, values in before.items():  # every trial finished before the kill is still there, unchanged
        assert after[number] == values
    assert len(after) == TRIALS
    pareto = read_json(out / "pareto.json")
    assert pareto["n_trials"] == TRIALS
    assert (out / "best" / "model.onnx").is_file()
    config = json.loads((out / "config.json").read_text())
    assert len(config["resumed_utc"]) == 1


@pytest.mark.slow
def test_sigint_writes_results_so_far(tmp_path, search_cache, mobilenet_table):
    out = tmp_path / "run"
    proc, _ = _start_and_wait(out, mobilenet_table, search_cache, finished=2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    done = completed_trials(out / "study.db")
    assert 2 <= len(done) < TRIALS
    pareto = read_json(out / "pareto.json")
    assert pareto["n_trials"] == len(done)
    assert {e["trial"] for e in pareto["pareto"]} <= set(done)
    report = (out / "report.md").read_text()
    assert "interrupted" in report and f"--resume {out}" in report
    assert "INTERRUPTED" in stdout
    assert not (out / "best").exists()  # no final model from an interrupted search
