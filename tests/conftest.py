"""Shared fixtures: the seeded tiny model, loaded once per test session."""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny():
    """The `tiny` preset model (seeded random weights), in eval mode."""
    import brivl

    return brivl.load("tiny")
