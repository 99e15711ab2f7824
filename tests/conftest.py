"""Shared fixtures: the seeded tiny model, loaded once per test session."""
import os
import socket

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny():
    """The `tiny` preset model (seeded random weights), in eval mode."""
    import brivl

    return brivl.load("tiny")


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test, restored after: on a small shared machine two threads fighting for the
    cores made the tiny-model render steps up to 7x slower (78 s against 11 s for the viz tests)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test (use it where everything must come from local files)."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
