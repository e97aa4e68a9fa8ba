"""The baselines experiment's set-up for the ``prune`` space: its teacher and its hand-made grid."""

from __future__ import annotations

import pathlib
import sys
import types

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
import experiments._common as common  # noqa: E402
from experiments.search_baselines import UNIFORM_PRUNE_ONLY, uniform_grid  # noqa: E402


def test_uniform_grid_of_the_prune_space_prunes_every_prunable_layer_alike_at_int8() -> None:
    from spaces import get_space

    space = get_space("prune", input_size=16, in_channels=1)
    layers = space.layers(space.candidate())
    grid = uniform_grid(space)
    assert [label["uniform_prune"] for label, _ in grid] == list(UNIFORM_PRUNE_ONLY) and len(grid) == 16
    for label, cand in grid:
        assert label["bits"] == 8
        assert list(cand.prune_ratios) == [label["uniform_prune"] if layer.prunable else 0.0 for layer in layers]
        assert list(cand.bits) == [8 if layer.quantisable else 32 for layer in layers]
        assert set(cand.genes["rank_ratios"]) == {1.0}  # no factorisation


def test_load_setup_builds_the_prune_space_around_the_trained_teacher(monkeypatch) -> None:
    """As ``search.run`` does: the space compresses the trained teacher, not the built-in architecture with
    fresh random weights (which the experiments once scored)."""
    import search
    from spaces import builtin_teacher

    data = types.SimpleNamespace(input_shape=(1, 16, 16), num_classes=10)
    trained = builtin_teacher(in_channels=1)
    monkeypatch.setattr(search, "load_data", lambda spec, seed=0: data)
    monkeypatch.setattr(search, "load_teacher", lambda spec, ds, seed=0, epochs=0: types.SimpleNamespace(model=trained))
    monkeypatch.setattr(search, "resolve_device", lambda spec, space, profile_min=0: None)
    setup = common.load_setup(data="digits", space="prune")
    assert setup.space.candidate().options["teacher"].startswith("memory:")
    assert setup.space.build(setup.space.candidate()).state_dict()["conv1.weight"].equal(trained.state_dict()["conv1.weight"])


def test_attribution_separates_what_the_enqueued_trials_reach_from_the_sampler_s_front_points() -> None:
    from experiments.search_baselines import attribution, front, hv_curve

    def row(acc, lat, size, enqueued, feasible=True):
        return {"state": "COMPLETE", "trained": feasible, "feasible": feasible, "accuracy": acc, "latency_ms": lat,
                "size_bytes": size, "enqueued": enqueued}

    rows = [row(0.7, 0.9, 50, True), row(0.5, 0.5, 20, True), row(0.0, 1.5, 80, False, feasible=False),
            row(0.72, 0.8, 40, False),  # dominates the first start
            row(0.4, 0.6, 30, False)]  # dominated by the second start
    assert [r["accuracy"] for r in front(rows, budget_ms=1.0, size_ref=100)] == [0.5, 0.72]
    res = {"budget_ms": 1.0, "hypervolume": {"size_ref_bytes": 100}}
    a = attribution(res, [{"trials": rows}])
    assert a["enqueued_trials"]["mean"] == 2 and a["front_points"]["mean"] == 2
    assert a["front_points_from_sampler"]["mean"] == 1
    assert a["hypervolume_enqueued_only"]["mean"] == hv_curve(rows[:2], budget_ms=1.0, size_ref=100)[-1]
    assert a["hypervolume_enqueued_only"]["mean"] < hv_curve(rows, budget_ms=1.0, size_ref=100)[-1]
    assert attribution(res, [{"trials": [dict(r, enqueued=False) for r in rows]}]) is None
