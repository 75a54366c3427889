"""Test-wide isolation: bench never writes into the checkout's .bench/ or results/ during tests."""

from __future__ import annotations

import os
import tempfile

import pytest

from bench.core import numerics

# the suite runs as `bench` does by default, set up before any test imports torch or numpy: pinned where it can be
# had (records made in this process and in the processes it starts carry the pinned entry), fast where not;
# BENCH_NUMERICS=fast runs it in the other mode
numerics.apply()

_SESSION_HOME = tempfile.mkdtemp(prefix="bench-test-home-")
os.environ["BENCH_HOME"] = _SESSION_HOME  # tests may override per test/module with monkeypatch


@pytest.fixture
def bench_home(tmp_path, monkeypatch):
    """A fresh, empty BENCH_HOME for one test."""
    home = tmp_path / "bench-home"
    monkeypatch.setenv("BENCH_HOME", str(home))
    return home
