"""``space.trial_params``: the Optuna parameters that draw a given candidate again (for ``enqueue_trial``)."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from spaces import SEARCH_BITS, get_space

SPACES = [("mobilenet", {}), ("shufflenet", {}), ("fbnet", {}), ("prune", {"input_size": 16, "in_channels": 1})]


@pytest.mark.parametrize("name,options", SPACES)
@pytest.mark.parametrize("search", [("arch", "prune", "bits"), ("prune", "bits"), ("arch",), ("bits",)])
def test_random_candidates_are_drawn_again_from_their_params(name, options, search) -> None:
    space = get_space(name, **options)
    rng = np.random.default_rng(3)
    for _ in range(15):
        cand = space.sample(rng, search=search)
        params = space.trial_params(cand, search=search)
        again = space.sample(optuna.trial.FixedTrial(params), search=search)
        assert again.to_json() == cand.to_json()
        # exactly the parameters the sample draws: what an enqueued trial pins, nothing left to the sampler
        study = optuna.create_study()
        study.enqueue_trial(params)
        trial = study.ask()
        space.sample(trial, search=search)
        assert trial.params == params


@pytest.mark.parametrize("name", ["mobilenet", "shufflenet"])
def test_opt_in_genes_are_given_when_asked_for(name) -> None:
    space = get_space(name)
    rng = np.random.default_rng(0)
    cands = [space.sample(rng, genes=("crelu",)) for _ in range(12)]
    assert any(c.genes.get("crelu", 0) for c in cands)
    for cand in cands:
        params = space.trial_params(cand, genes=("crelu",))
        assert "crelu" in params
        assert space.sample(optuna.trial.FixedTrial(params), genes=("crelu",)).to_json() == cand.to_json()


def test_a_candidate_the_sample_cannot_draw_is_refused() -> None:
    space = get_space("mobilenet")
    layers = space.layers(space.candidate())
    pruned = space.candidate(prune_ratios=[0.5 if layer.prunable else 0.0 for layer in layers])
    with pytest.raises(ValueError, match="cannot be drawn"):
        space.trial_params(pruned, search=("arch", "bits"))  # prune not searched, ratios not at their default
    at4 = space.candidate(bits=[4] * len(layers))
    with pytest.raises(ValueError, match="cannot be drawn"):
        space.trial_params(at4, bits=(8, 32))  # a width the sample does not draw
    off_grid = space.candidate(prune_ratios=[0.123 if layer.prunable else 0.0 for layer in layers])
    with pytest.raises(ValueError, match="cannot be drawn"):
        space.trial_params(off_grid)
    crelu = space.candidate(crelu=2)
    with pytest.raises(ValueError, match="cannot be drawn"):
        space.trial_params(crelu)  # an opt-in gene not asked for
    assert space.trial_params(space.candidate(bits=[8] * len(layers)), bits=SEARCH_BITS)
