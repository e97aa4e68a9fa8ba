"""The rank statistics of the proxy-fidelity experiment against scipy and against hand-counted cases."""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from experiments.proxy_fidelity import _proxy_spec, kendall_tau_b, resolvable_agreement, spearman  # noqa: E402


def test_tau_and_rho_match_scipy_with_ties() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = list(np.round(rng.random(12), 1))  # rounded: ties on both sides
        b = list(np.round(np.array(a) + 0.3 * rng.random(12), 1))
        assert kendall_tau_b(a, b) == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-12)
        assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


def test_resolvable_pairs_skip_differences_within_validation_noise() -> None:
    long = [0.95, 0.951, 0.60]  # the first two are one image apart on 1,000 images: no resolvable order
    proxy = [0.5, 0.9, 0.1]     # orders the unresolvable pair "wrongly": it must not count
    r = resolvable_agreement(proxy, long, 1000)
    assert r == {"pairs": 3, "resolvable": 2, "agree": 2, "disagree": 0, "kendall_tau": 1.0}
    r = resolvable_agreement([0.1, 0.2, 0.9], long, 1000)  # now both resolvable pairs are reversed
    assert (r["agree"], r["disagree"], r["kendall_tau"]) == (0, 2, -1.0)
    assert resolvable_agreement([0.1, 0.2], [0.5, 0.5], 100)["kendall_tau"] is None


def test_proxy_spec_is_parsed_or_refused() -> None:
    assert _proxy_spec("4:32:0.05") == (4, 32, 0.05)
    with pytest.raises(SystemExit, match="EPOCHS:BATCH:LR"):
        _proxy_spec("4:32")


def test_result_files_are_named_by_space_and_non_default_data() -> None:
    from experiments.proxy_fidelity import _stem

    assert _stem("prune", "digits") == "prune"  # the committed digits results keep their names
    assert _stem("prune", "shapes") == "prune_shapes"
    assert _stem("mobilenet", "imagefolder:/data/photos") == "mobilenet_imagefolder"


def test_summary_names_the_data_and_sets_the_mac_and_size_baselines_beside_the_proxy(tmp_path, monkeypatch) -> None:
    import json

    import experiments.proxy_fidelity as pf

    monkeypatch.setattr(pf, "RESULTS", tmp_path)
    long = [0.5, 0.6, 0.7, 0.8]
    rows = [{"long_accuracy": a, "macs": m, "size_bytes": s, "proxy": {}}
            for a, m, s in zip(long, [1, 2, 3, 4], [40, 30, 20, 10])]  # MACs rank like long, size reversed
    proxy = {"kendall_tau_b": 0.5, "spearman_rho": 0.6, "seconds_median": 1.0, "accuracy_range": [0.1, 0.2],
             "resolvable_pairs": {"pairs": 6, "resolvable": 0, "kendall_tau": None}}
    result = {"space": "prune", "data_spec": "shapes", "command": "python experiments/proxy_fidelity.py --data shapes",
              "settings": {"long_epochs": 40}, "long_accuracy_range": [0.5, 0.8], "long_seconds_median": 9.0,
              "by_proxy_epochs": {"4:32:0.05": proxy}, "ceiling": None, "rows": rows}
    (tmp_path / "proxy_fidelity_prune_shapes.json").write_text(json.dumps(result))
    (tmp_path / "proxy_fidelity_prune_shapes.partial.json").write_text("{}")  # a running experiment: skipped
    table = pf.summarise()
    line = next(r for r in table.splitlines() if r.startswith("| prune |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "shapes" and cells[3] == "4:32:0.05"
    assert (cells[8], cells[9]) == ("1.000", "-1.000")  # tau MACs, tau size
    assert "--data shapes" in table and (tmp_path / "proxy_fidelity.md").read_text() == table
