"""Shared fixtures for the ssr tests: a tiny search space that keeps every test in seconds."""

import pytest
import torch

from ssr.config import SpaceConfig, StageSpace


@pytest.fixture
def tiny_space() -> SpaceConfig:
    return SpaceConfig(
        stem_width=8,
        stages=(StageSpace(16, 3, 1, 0.1), StageSpace(24, 4, 2, 0.2)),
        dilations=(1, 2),
        pools=(1, 2),
        channel_remove=(8, 4, 0),
    )


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
