"""Optuna's own way to scale: several ``python -m search`` processes sharing one study in PostgreSQL.

A real PostgreSQL server is started on loopback for the session (a private cluster in a temporary
folder, from the binaries ``.ci/run`` installs), and torn down afterwards.
"""

from __future__ import annotations

import glob
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _postgres_bin() -> pathlib.Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, newest version first; None when not installed."""
    found = shutil.which("initdb")
    dirs = [pathlib.Path(found).resolve().parent] if found else []
    dirs += sorted(
        (pathlib.Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0,
        reverse=True,
    )
    for d in dirs:
        if all((d / tool).exists() for tool in ("initdb", "pg_ctl", "createdb")):
            return d
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a fresh database on a private PostgreSQL server listening on 127.0.0.1 only."""
    in_ci = os.environ.get("CI", "").lower() == "true"
    bindir = _postgres_bin()
    if bindir is None:
        if in_ci:
            pytest.fail("PostgreSQL binaries (initdb, pg_ctl) are missing in CI: .ci/run should have installed them")
        pytest.skip("PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin)")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        if in_ci:
            pytest.fail("psycopg2 is missing in CI: it is in the test extra of pyproject.toml")
        pytest.skip("psycopg2-binary (the test extra) is not installed")

    root = pathlib.Path(tempfile.mkdtemp(prefix="karumi-pg-"))
    as_root = os.geteuid() == 0
    if as_root:  # initdb and the server refuse to run as root: hand the folder to the postgres user
        shutil.chown(root, user="postgres", group="postgres")

    def run(*args: str) -> None:
        cmd = [str(a) for a in args]
        if as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=root)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")

    data, log = root / "data", root / "server.log"
    port = _free_port()
    user, dbname = "karumi", "karumi_test"
    started = False
    try:
        run(bindir / "initdb", "-D", data, "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync")
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        run(bindir / "pg_ctl", "-D", data, "-l", log, "-o", opts, "-w", "-t", "60", "start")
        started = True
        run(bindir / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", user, dbname)
        yield f"postgresql+psycopg2://{user}@127.0.0.1:{port}/{dbname}"
    finally:
        if started:
            run(bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_processes_share_one_study_in_postgres(postgres_url: str, tmp_path: pathlib.Path,
                                                   tiny_teacher: pathlib.Path) -> None:
    """Two ``python -m search`` processes, one study: every trial lands once, none is lost."""
    import optuna

    runs = {"a": 3, "b": 2}
    procs = {}
    for name, n in runs.items():
        env = {**os.environ, "KARUMI_CACHE": str(tmp_path / f"cache-{name}")}
        cmd = [sys.executable, "-m", "search", "--budget-ms", "50", "--trials", str(n), "--out", str(tmp_path / name),
               "--storage", postgres_url, "--study-name", "shared", "--seed", "0", "--teacher", str(tiny_teacher),
               "--proxy-epochs", "1", "--proxy-samples", "64", "--final-epochs", "0", "--profile-min", "0.1", "-q"]
        procs[name] = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True)
    outputs = {}
    try:
        for name, proc in procs.items():
            outputs[name] = proc.communicate(timeout=600)[0]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    for name, proc in procs.items():
        assert proc.returncode == 0, f"process {name} failed:\n{outputs[name][-3000:]}"

    study = optuna.load_study(study_name="shared", storage=postgres_url)
    trials = study.get_trials(deepcopy=False)
    total = sum(runs.values())
    assert sorted(t.number for t in trials) == list(range(total))  # none lost, none duplicated
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    owners = [t.user_attrs["run_id"] for t in trials]
    assert sorted(owners.count(o) for o in set(owners)) == sorted(runs.values())
    for name, n in runs.items():  # each process reports its own trials, in the standard files
        pareto = json.loads((tmp_path / name / "pareto.json").read_text())
        assert pareto["n_trials"] == n
