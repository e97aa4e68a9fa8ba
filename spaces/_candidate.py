"""`Candidate`: one point of a search space as plain, serialisable data.

A candidate knows nothing of how it is decoded: its space (``get_space(c.space, **c.options)``, or the
space instance that made it) lists its kernels, builds its model and reports its statistics.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

__all__ = ["Candidate"]

FORMAT_VERSION = 1


def _freeze(value: Any) -> Any:
    """Lists become tuples and mappings become dicts with frozen values, so equality survives JSON."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Mapping):
        return {str(k): _freeze(v) for k, v in value.items()}
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    if isinstance(value, dict):
        return {k: _thaw(v) for k, v in sorted(value.items())}
    return value


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A student architecture (or the teacher) with per-layer prune ratios and bit widths.

    Attributes:
        space: name of the registered space that decodes it.
        genes: architecture genes, JSON values only (space-specific, e.g. ``{"ops": [...]}`` for fbnet).
        prune_ratios: fraction of channels removed per layer, in the order of ``space.layer_names(cand)``.
        bits: bit width per layer (1, 2, 4, 8, 16 or 32), same order.
        options: the options of the space that made it (``num_classes``, ``input_size``, ...), so that the
            candidate alone rebuilds the same network.
    """

    space: str
    genes: Mapping[str, Any]
    prune_ratios: tuple[float, ...] = ()
    bits: tuple[int, ...] = ()
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "genes", _freeze(dict(self.genes)))
        object.__setattr__(self, "options", _freeze(dict(self.options)))
        object.__setattr__(self, "prune_ratios", tuple(float(r) for r in self.prune_ratios))
        object.__setattr__(self, "bits", tuple(int(b) for b in self.bits))

    def __hash__(self) -> int:
        return hash(self.to_json())

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "space": self.space,
            "genes": _thaw(self.genes),
            "prune_ratios": list(self.prune_ratios),
            "bits": list(self.bits),
            "options": _thaw(self.options),
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, **kwargs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Candidate":
        if not isinstance(data, Mapping):
            raise ValueError(f"a candidate must be a JSON object, got {type(data).__name__}")
        version = data.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"candidate format_version={version!r} is not supported; allowed: {FORMAT_VERSION}")
        for key in ("space", "genes"):
            if key not in data:
                raise ValueError(f"candidate is missing the field {key!r}")
        return cls(
            space=data["space"],
            genes=data["genes"],
            prune_ratios=data.get("prune_ratios", ()),
            bits=data.get("bits", ()),
            options=data.get("options", {}),
        )

    @classmethod
    def from_json(cls, text: str) -> "Candidate":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"candidate JSON is malformed: {exc}") from None
        return cls.from_dict(data)
