"""Test-wide isolation: bench never writes into the checkout's .bench/ or results/ during tests."""

from __future__ import annotations

import os
import tempfile

import pytest

_SESSION_HOME = tempfile.mkdtemp(prefix="bench-test-home-")
os.environ["BENCH_HOME"] = _SESSION_HOME  # tests may override per test/module with monkeypatch


@pytest.fixture
def bench_home(tmp_path, monkeypatch):
    """A fresh, empty BENCH_HOME for one test."""
    home = tmp_path / "bench-home"
    monkeypatch.setenv("BENCH_HOME", str(home))
    return home
