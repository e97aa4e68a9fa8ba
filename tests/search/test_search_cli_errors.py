"""Bad input to ``python -m search``: one line naming the problem, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import json
import pathlib

import pytest

from _search_helpers import (  # noqa: F401  (fixtures)
    cache_env,
    mobilenet_table,
    one_error_line,
    run_cli,
    search_cache,
    snapshot,
    tiny_args,
)
from search._cli import EXIT_BAD_INPUT, main


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(["-q", *argv])
    captured = capsys.readouterr()
    assert code == EXIT_BAD_INPUT, captured
    return one_error_line(captured.err)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--budget-ms", "0"], "--budget-ms 0"),
        (["--budget-ms", "-5"], "--budget-ms -5"),
        (["--budget-ms", "nan"], "--budget-ms nan"),
        ([], "--budget-ms is required"),
        (["--budget-ms", "20", "--space", "resnet"], "--space 'resnet' is not a known space"),
        (["--budget-ms", "20", "--data", "imagenet"], "--data 'imagenet' is not a known data set"),
        (["--budget-ms", "20", "--sampler", "cmaes"], "--sampler 'cmaes'"),
        (["--budget-ms", "20", "--trials", "0"], "--trials 0"),
        (["--budget-ms", "20", "--search", "arch,width"], "--search"),
        (["--budget-ms", "20", "--select", "best"], "--select 'best' is not allowed; allowed: fastest-tied, most-accurate"),
        (["--budget-ms", "20", "--size", "tiny"], "--size 'tiny' is not allowed; allowed: dense, compressed"),
        (["--budget-ms", "20", "--size", "compressed"], "--size compressed needs --space prune"),
        (["--budget-ms", "20", "--genes", "swish"], "--genes 'swish' is not allowed with --space mobilenet; allowed: a comma list of crelu"),
        (["--budget-ms", "20", "--space", "fbnet", "--genes", "crelu"], "allowed: none (this space has no opt-in genes)"),
        (["--budget-ms", "20", "--genes", "crelu", "--search", "prune,bits"], "--genes crelu needs 'arch' in --search"),
    ],
)
def test_bad_option_is_one_line_and_exit_2(capsys, tmp_path, argv, needle):
    out = tmp_path / "run"
    line = _fails(capsys, [*argv, "--out", str(out)])
    assert needle in line
    assert not out.exists()


def test_missing_paths_are_named(capsys, tmp_path):
    missing = tmp_path / "nowhere"
    cases = [
        (["--data", f"imagefolder:{missing}"], str(missing)),
        (["--data", "cifar10", "--data-dir", str(missing)], str(missing)),
        (["--teacher", str(missing / "teacher.pt")], str(missing / "teacher.pt")),
        (["--teacher", f"torchvision:resnet18={missing / 'w.pt'}"], str(missing / "w.pt")),
        (["--device", str(missing / "table.json")], str(missing / "table.json")),
    ]
    for extra, needle in cases:
        out = tmp_path / "run"
        line = _fails(capsys, ["--budget-ms", "20", *extra, "--out", str(out)])
        assert needle in line, line
        assert not out.exists()


def test_torchvision_data_absent_without_download(capsys, tmp_path, cache_env):
    empty = tmp_path / "data"
    empty.mkdir()
    line = _fails(capsys, ["--budget-ms", "20", "--data", "mnist", "--data-dir", str(empty), "--out", str(tmp_path / "r")])
    assert "mnist" in line and "--download" in line
    assert list(empty.iterdir()) == []  # nothing downloaded
    assert not (tmp_path / "r").exists()


def test_existing_run_is_never_overwritten(capsys, tmp_path):
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "pareto.json").write_text('{"earlier": true}\n')
    before = snapshot(earlier)
    line = _fails(capsys, ["--budget-ms", "20", "--out", str(earlier)])
    assert str(earlier) in line and "--resume" in line
    assert snapshot(earlier) == before


def test_resume_of_a_folder_that_is_not_a_run(capsys, tmp_path):
    line = _fails(capsys, ["--resume", str(tmp_path)])
    assert "config.json" in line


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not a readable JSON"),
        ('{"format_version": 1, "device": {"name": "pi"}, "kernel_rows": [{"kernel": {"op": "conv"}}]}', "not a valid latency table"),
        ('{"kind": "karumi.LatencyPredictor", "format_version": 99}', "corrupt latency predictor"),
    ],
)
def test_corrupt_device_file(capsys, tmp_path, cache_env, content, needle):
    table = tmp_path / "table.json"
    table.write_text(content)
    out = tmp_path / "run"
    line = _fails(capsys, ["--budget-ms", "20", "--device", str(table), "--out", str(out), *tiny_args()])
    assert needle in line and str(table) in line
    assert not out.exists()


def test_truncated_table(capsys, tmp_path, cache_env, mobilenet_table):
    text = mobilenet_table.read_text()
    table = tmp_path / "truncated.json"
    table.write_text(text[: len(text) // 2])
    line = _fails(capsys, ["--budget-ms", "20", "--device", str(table), "--out", str(tmp_path / "r"), *tiny_args()])
    assert str(table) in line


def test_table_of_another_space_or_runtime(capsys, tmp_path, cache_env, mobilenet_table):
    data = json.loads(mobilenet_table.read_text())
    other_space = tmp_path / "fbnet_table.json"
    other_space.write_text(json.dumps(data))
    line = _fails(capsys, ["--budget-ms", "20", "--space", "fbnet", "--device", str(other_space),
                           "--out", str(tmp_path / "r1"), *tiny_args()])
    assert "mobilenet" in line and "fbnet" in line
    data["device"]["runtime"] = "tflite"
    other_runtime = tmp_path / "tflite_table.json"
    other_runtime.write_text(json.dumps(data))
    line = _fails(capsys, ["--budget-ms", "20", "--device", str(other_runtime), "--out", str(tmp_path / "r2"),
                           *tiny_args()])
    assert "tflite" in line
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_budget_below_the_fastest_model_says_that_latency(capsys, tmp_path, cache_env, mobilenet_table):
    out = tmp_path / "run"
    line = _fails(capsys, ["--budget-ms", "0.001", "--device", str(mobilenet_table), "--out", str(out), *tiny_args()])
    assert "below the fastest model the mobilenet space can produce" in line
    fastest = float(line.rsplit(":", 1)[1].split("ms")[0])
    assert fastest > 0.001
    assert not out.exists()


def test_unloadable_teacher(capsys, tmp_path, cache_env):
    bad = tmp_path / "teacher.pt"
    bad.write_bytes(b"this is not a model")
    line = _fails(capsys, ["--budget-ms", "20", "--teacher", str(bad), "--out", str(tmp_path / "r"), *tiny_args()])
    assert "--teacher" in line and "cannot be loaded" in line


def test_teacher_with_wrong_outputs(capsys, tmp_path, cache_env):
    import torch

    model = torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 3)))
    path = tmp_path / "three_classes.pt"
    model.save(str(path))
    line = _fails(capsys, ["--budget-ms", "20", "--teacher", str(path), "--out", str(tmp_path / "r"), *tiny_args()])
    assert "(2, 3)" in line and "10 classes" in line


def test_a_space_that_cannot_beat_the_teacher_is_bad_input(capsys, tmp_path, cache_env):
    """A linear teacher is faster than anything fbnet builds: measured side by side here, refused up front."""
    import torch

    model = torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 10)))
    path = tmp_path / "linear.pt"
    model.save(str(path))
    out = tmp_path / "r"
    line = _fails(capsys, ["--budget-ms", "20", "--space", "fbnet", "--teacher", str(path), "--out", str(out),
                           *tiny_args()])
    assert "--space fbnet cannot produce a model faster than the teacher on this device" in line
    assert "measures" in line and "(side by side)" in line
    assert not out.exists()


def test_subprocess_exit_code_and_single_line(tmp_path, search_cache):
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "report.md").write_text("earlier run\n")
    before = snapshot(earlier)
    proc = run_cli(["--budget-ms", "20", "--out", str(earlier)], env_cache=search_cache)
    assert proc.returncode == 2
    assert one_error_line(proc.stderr).startswith(f"error: --out {earlier}")
    assert proc.stdout == ""
    assert snapshot(earlier) == before
    proc = run_cli(["--budget-ms", "-1"], env_cache=search_cache, cwd=tmp_path)
    assert proc.returncode == 2
    one_error_line(proc.stderr)
    assert not (tmp_path / "runs").exists()
