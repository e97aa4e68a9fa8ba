"""Fixtures and helpers shared by the ``python -m search`` tests (imported by those test modules).

Every test runs with ``KARUMI_CACHE`` in a temporary folder shared by the session, so the built-in teacher
(trained for one epoch) and the local latency profiles are made once per session and the user's cache is
never touched.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
from typing import Any, Iterator

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

#: Options of a tiny, fast search (every test run uses them unless it says otherwise).
TINY: dict[str, Any] = {
    "trials": 3,
    "proxy_samples": 64,
    "proxy_epochs": 1,
    "final_epochs": 1,
    "teacher_epochs": 1,
    "profile_min": 0.1,
}


def tiny_args(**over: Any) -> list[str]:
    """Command-line flags of :data:`TINY` (with overrides)."""
    opts = {**TINY, **over}
    args: list[str] = []
    for k, v in opts.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


@pytest.fixture(scope="session")
def search_cache(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The session's ``KARUMI_CACHE`` folder."""
    return tmp_path_factory.mktemp("karumi-cache")


@pytest.fixture()
def cache_env(search_cache: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """``KARUMI_CACHE`` set to the session's temporary cache for this test."""
    monkeypatch.setenv("KARUMI_CACHE", str(search_cache))
    return search_cache


@pytest.fixture(scope="session")
def mobilenet_table(search_cache: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A latency table of this machine for the mobilenet space on digits (a 6-second profile)."""
    from search import profile_spaces
    from spaces import get_space

    from search._data import DIGITS_SIZE

    path = tmp_path_factory.mktemp("tables") / "mobilenet.json"
    space = get_space("mobilenet", num_classes=10, input_size=DIGITS_SIZE, in_channels=1)
    profile_spaces([space], device_name="test-cpu", out=path, budget_min=0.1)
    return path


@pytest.fixture(scope="session")
def prune_table(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A latency table for the ``prune`` space over the built-in teacher on digits: five whole models timed
    end to end on this machine (profiling the prune space's kernels takes minutes: too slow for a test).
    The kernels depend on the teacher's architecture only, so an untrained teacher gives the same ones."""
    import numpy as np

    from latency_models import LatencyTable, measure_onnx
    from search._data import DIGITS_SIZE
    from spaces import builtin_teacher, get_space

    folder = tmp_path_factory.mktemp("prune-table")
    space = get_space("prune", teacher=builtin_teacher(in_channels=1, num_classes=10), num_classes=10,
                      input_size=DIGITS_SIZE, in_channels=1)
    rng = np.random.default_rng(0)
    cands = [space.candidate()] + [space.sample(rng) for _ in range(4)]
    latencies = []
    for i, cand in enumerate(cands):
        space.onnx(cand, path=str(folder / f"m{i}.onnx"))
        latencies.append(measure_onnx(str(folder / f"m{i}.onnx")))
    table = LatencyTable.from_measurements(device={"name": "test-cpu", "runtime": "onnxruntime"},
                                           kernels=[space.kernels(c) for c in cands],
                                           candidates=[c.to_dict() for c in cands],
                                           latencies_ms=latencies)
    path = folder / "prune.json"
    table.save(path)
    return path


def run_cli(args: list[str], *, env_cache: pathlib.Path, cwd: pathlib.Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``python -m search ARGS`` in a subprocess with the test cache; returns the completed process."""
    env = {**os.environ, "KARUMI_CACHE": str(env_cache), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "search", *args], capture_output=True, text=True, env=env,
                          cwd=cwd or ROOT, timeout=timeout)


def popen_cli(args: list[str], *, env_cache: pathlib.Path) -> subprocess.Popen[str]:
    """``python -m search ARGS`` started in the background (quiet), with the test cache.

    Its SIGINT is the default (Ctrl-C), as in a terminal: a test suite started in the background by a
    non-interactive shell (``pytest &``, ``nohup``) inherits SIGINT ignored, and Python would then ignore
    the tests' Ctrl-C too."""
    env = {**os.environ, "KARUMI_CACHE": str(env_cache), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "search", "-q", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def completed_trials(db: pathlib.Path, *, after_kill: bool = False) -> dict[int, tuple[float, ...]]:
    """Trial number -> objective values of the COMPLETE trials in a run's SQLite study (read-only).
    ``after_kill``: the run was killed, possibly inside a transaction; its hot journal is rolled back by a
    read-write connection (a read-only one cannot, and would read as no trials)."""
    if not db.is_file():
        return {}
    con = (sqlite3.connect(str(db), timeout=30) if after_kill else
           sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30))
    try:
        rows = con.execute(
            "SELECT t.number, v.objective, v.value FROM trials t JOIN trial_values v ON v.trial_id = t.trial_id "
            "WHERE t.state = 'COMPLETE' ORDER BY t.number, v.objective").fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return {}
    finally:
        con.close()
    out: dict[int, list[float]] = {}
    for number, _objective, value in rows:
        out.setdefault(int(number), []).append(float(value))
    return {k: tuple(v) for k, v in out.items()}


def snapshot(folder: pathlib.Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to check a folder was left untouched)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def read_json(path: pathlib.Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def one_error_line(stderr: str) -> str:
    """The single ``error: ...`` line of a failed command (asserts there is exactly one line, no traceback)."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


def iter_files(folder: pathlib.Path) -> Iterator[pathlib.Path]:
    return (p for p in folder.rglob("*") if p.is_file())
