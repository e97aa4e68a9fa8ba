from __future__ import annotations

import pytest

from spaces import Candidate


def test_json_round_trip_is_exact():
    c = Candidate("fbnet", {"ops": ["k3_e1", "skip"]}, prune_ratios=[0.25, 0.0], bits=[8, 32], options={"num_classes": 10})
    again = Candidate.from_json(c.to_json())
    assert again == c and hash(again) == hash(c)
    assert again.genes["ops"] == ("k3_e1", "skip")


@pytest.mark.parametrize(
    "text, message",
    [("{", "malformed"), ("[]", "JSON object"), ('{"space": "x"}', "genes"), ('{"format_version": 9, "space": "x", "genes": {}}', "format_version")],
)
def test_bad_json_is_refused(text, message):
    with pytest.raises(ValueError, match=message):
        Candidate.from_json(text)
