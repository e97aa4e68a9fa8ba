"""Registry of search spaces by name."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, TypeVar

if TYPE_CHECKING:
    from spaces._base import SearchSpace

__all__ = ["get_space", "list_spaces", "register_space"]

logger = logging.getLogger(__name__)

_SPACES: dict[str, type["SearchSpace"]] = {}
S = TypeVar("S", bound="type[SearchSpace]")


def register_space(name: str) -> Callable[[S], S]:
    """Class decorator: register a :class:`~spaces.SearchSpace` subclass under ``name``.

    A name that is already taken raises ``ValueError``: a registry never overwrites silently.
    """

    def decorator(cls: S) -> S:
        if name in _SPACES and _SPACES[name] is not cls:
            raise ValueError(f"space name {name!r} is already registered by {_SPACES[name].__qualname__}")
        cls.name = name
        _SPACES[name] = cls
        return cls

    return decorator


def list_spaces() -> list[str]:
    """Names of the registered spaces, sorted (the built-in ones register when ``spaces`` is imported)."""
    return sorted(_SPACES)


def opt_in_genes(name: str) -> tuple[str, ...]:
    """The opt-in architecture genes of the space registered as ``name`` (``SearchSpace.OPT_IN_GENES``: drawn
    by ``sample(..., genes=...)`` only when asked), without building it."""
    if name not in _SPACES:
        raise ValueError(f"space={name!r} is not registered; allowed: {', '.join(sorted(_SPACES))}")
    return tuple(_SPACES[name].OPT_IN_GENES)


def get_space(name: str, **options: Any) -> "SearchSpace":
    """An instance of the space registered as ``name``, with its options (all have defaults)."""
    if name not in _SPACES:
        raise ValueError(f"space={name!r} is not registered; allowed: {', '.join(sorted(_SPACES))}")
    return _SPACES[name](**options)
