"""Fixtures of the search tests."""

from __future__ import annotations

import pathlib

import pytest


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A TorchScript teacher for ``--data digits`` (the built-in architecture, untrained): loads instantly, so
    end-to-end tests of the plumbing do not pay for training a teacher. Full width, so that it runs as slowly
    as the real one and the students can be faster than it (what ships must be)."""
    import torch

    from spaces import builtin_teacher

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "tiny_teacher.pt"
    torch.jit.script(builtin_teacher(in_channels=1, num_classes=10).eval()).save(str(path))
    return path


@pytest.fixture(scope="session")
def wide_teacher(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The built-in architecture at twice its width (4x its MACs), untrained, for ``--data digits``: a teacher
    that a space whose fastest students run about as fast as the built-in teacher (``fbnet`` at 16 px) can
    beat, so that an end-to-end run of that space has something to ship."""
    import torch

    from spaces import builtin_teacher

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "wide_teacher.pt"
    torch.jit.script(builtin_teacher(in_channels=1, num_classes=10, width=96).eval()).save(str(path))
    return path
