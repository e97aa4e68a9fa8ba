"""A run folder that stands alone: image files reproduce the reported accuracy through ONNX Runtime alone, a
moved or copied run resumes its own study, and a redirected log stays a few short lines."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from _search_helpers import (  # noqa: F401  (fixtures)
    completed_trials,
    mobilenet_table,
    read_json,
    run_cli,
    search_cache,
    tiny_args,
)


def _write_shapes_folder(root: pathlib.Path, counts: dict[str, int], size: int) -> None:
    """``shapes`` images written as 8-bit PNG files in train/ val/ test/ class folders (an image folder)."""
    from PIL import Image

    from search._synthetic import CLASSES, make_shapes

    for k, (split, n) in enumerate(counts.items()):
        x, y = make_shapes(n, seed=50 + k, size=size)
        pixels = (np.clip(x, 0.0, 1.0) * 255 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)
        for i, (img, label) in enumerate(zip(pixels, y)):
            folder = root / split / CLASSES[int(label)]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i:04d}.png")


@pytest.mark.slow
def test_png_files_through_onnx_runtime_alone_reproduce_the_reported_accuracy(tmp_path, search_cache):
    images = tmp_path / "images"
    _write_shapes_folder(images, {"train": 200, "val": 60, "test": 120}, size=40)  # resized to 32 on both sides
    out = tmp_path / "run"
    proc = run_cli(["--budget-ms", "20", "--data", f"imagefolder:{images}", "--input-size", "32", "--out", str(out),
                    *tiny_args(final_epochs=2)], env_cache=search_cache, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    final = read_json(out / "best" / "final.json")
    contract = read_json(out / "best" / "preprocess.json")
    assert contract["input_size"] == [32, 32] and contract["channels"] == 3 and contract["mean"] == []
    files = sorted((images / "test").rglob("*.png"))
    code = textwrap.dedent(f"""
        import runpy, sys
        sys.modules["torch"] = None  # the other machine: onnxruntime, numpy and Pillow only
        sys.argv = ["predict.py", *{[str(p) for p in files]!r}, "--top", "1"]
        runpy.run_path({str(out / "best" / "predict.py")!r}, run_name="__main__")
    """)
    pred = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert pred.returncode == 0, pred.stderr
    lines = pred.stdout.strip().splitlines()
    assert len(lines) == len(files)
    hits = sum(line.split(": ", 1)[1].split(" ")[0] == path.parent.name for line, path in zip(lines, files))
    assert abs(hits / len(files) - final["onnx_test_accuracy"]) <= 0.005


@pytest.mark.slow
def test_a_moved_and_a_copied_run_each_resume_their_own_study(tmp_path, search_cache, mobilenet_table):
    first = tmp_path / "first"
    done = run_cli(["--budget-ms", "20", "--device", str(mobilenet_table), "--out", str(first), "-q",
                    *tiny_args(trials=2, final_epochs=0)], env_cache=search_cache, timeout=900)
    assert done.returncode == 0, done.stderr
    assert read_json(first / "config.json")["options"]["storage"] is None  # the folder's own study.db
    moved = tmp_path / "moved"
    shutil.move(str(first), str(moved))
    again = run_cli(["-q", "--resume", str(moved), "--trials", "3"], env_cache=search_cache, timeout=900)
    assert again.returncode == 0, again.stderr
    assert len(completed_trials(moved / "study.db")) == 3
    copied = tmp_path / "copied"
    shutil.copytree(moved, copied)
    more = run_cli(["-q", "--resume", str(copied), "--trials", "4"], env_cache=search_cache, timeout=900)
    assert more.returncode == 0, more.stderr
    assert len(completed_trials(copied / "study.db")) == 4
    assert len(completed_trials(moved / "study.db")) == 3  # the original is untouched
    assert json.loads((copied / "pareto.json").read_text())["n_trials"] == 4


@pytest.mark.slow
def test_a_redirected_log_is_a_few_short_lines(tmp_path, search_cache, mobilenet_table):
    out = tmp_path / "run"
    proc = run_cli(["--budget-ms", "20", "--device", str(mobilenet_table), "--out", str(out),
                    *tiny_args(trials=4)], env_cache=search_cache, timeout=900)  # stdout and stderr are pipes
    assert proc.returncode == 0, proc.stderr
    log = proc.stdout + proc.stderr
    assert "\r" not in log  # no progress-bar stream
    lines = log.splitlines()
    assert len(lines) < 80 and max(len(line) for line in lines) < 400, log
    assert any(line.startswith("search: ") and "(done)" in line for line in lines), log
