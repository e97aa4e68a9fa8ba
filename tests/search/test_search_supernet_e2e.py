"""End to end on ``shapes`` with a real (small) supernet: ``python -m search --supernet-epochs 1``.

The supernet is trained on first use (and says so), cached under ``KARUMI_CACHE``; a second run with the
same space, data, teacher and epochs reads it from the cache instead of training it again.
"""

from __future__ import annotations

import json

import pytest

from _search_helpers import TINY, run_cli, tiny_args  # noqa: F401

# mobilenet: its fastest students at 16 px run well below the built-in teacher (shufflenet's only about as
# fast, a space refused up front: test_search_cli_errors)
ARGS = ["--budget-ms", "50", "--data", "shapes", "--input-size", "16", "--space", "mobilenet",
        "--supernet-epochs", "1", "--supernet-proxy-steps", "2", "--seed", "0"]

#: The run's lines shown when it does not fine-tune what it selected (how it measured and chose).
STEPS = ("bits", "budget", "fastest", "start", "measure", "select")


@pytest.mark.slow
def test_search_on_shapes_with_a_supernet(tmp_path):
    cache = tmp_path / "cache"
    first = run_cli([*ARGS, *tiny_args(), "--out", str(tmp_path / "a")], env_cache=cache, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "supernet mobilenet: reading the cached supernet, or training it now" in first.stdout
    assert "supernet trained now (1 epoch(s)" in first.stdout
    steps = "\n".join(line for line in first.stdout.splitlines() if line.split(" ", 1)[0] in STEPS)
    assert "from its supernet weights" in first.stdout, steps
    supernets = list((cache / "supernets").glob("mobilenet-*.pt"))
    assert len(supernets) == 1
    meta = json.loads(supernets[0].with_suffix(".json").read_text())
    assert meta["epochs_done"] == 1 and meta["space"] == "mobilenet" and meta["data"].startswith("shapes")
    pareto = json.loads((tmp_path / "a" / "pareto.json").read_text())
    assert any(e["accuracy"] > 0 for e in pareto["pareto"])
    final = json.loads((tmp_path / "a" / "best" / "final.json").read_text())
    assert 0.0 <= final["onnx_test_accuracy"] <= 1.0
    config = json.loads((tmp_path / "a" / "config.json").read_text())["options"]
    assert config["supernet_epochs"] == 1
    # the second run reads the supernet from the cache
    second = run_cli([*ARGS, *tiny_args(trials=1), "--out", str(tmp_path / "b")], env_cache=cache, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "supernet loaded from the cache" in second.stdout


def test_supernet_options_are_checked(tmp_path):
    bad = run_cli(["--budget-ms", "20", "--supernet-epochs", "-1", "--out", str(tmp_path / "x")],
                  env_cache=tmp_path / "cache")
    assert bad.returncode != 0
    assert "--supernet-epochs -1 must be an integer >= 0" in bad.stderr
