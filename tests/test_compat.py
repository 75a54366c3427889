"""The torchaudio/s3prl compatibility step: needed, sufficient, and pinned to the versions it was written for."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

from bench.core import compat as compat


def test_pinned_versions_are_the_ones_the_shim_was_written_for():
    # If this fails, torchaudio or s3prl changed: re-check whether bench/core/compat.py is still needed and right.
    assert metadata.version("torchaudio") == compat.TESTED_TORCHAUDIO
    assert metadata.version("s3prl") == compat.TESTED_S3PRL


def test_s3prl_import_fails_without_the_shim_and_works_with_it():
    plain = subprocess.run([sys.executable, "-c", "from s3prl.nn import S3PRLUpstream"], capture_output=True,
                           text=True, timeout=300)
    assert plain.returncode != 0, "s3prl now imports without bench.core.compat: remove the shim"
    shimmed = subprocess.run(
        [sys.executable, "-c",
         "import bench.core.compat as c; c.apply(); from s3prl.nn import S3PRLUpstream; import torch;"
         "u = S3PRLUpstream('fbank'); hs, lens = u(torch.randn(2, 16000), torch.tensor([16000, 8000]));"
         "print(len(hs), tuple(hs[0].shape), int(lens[0][1]))"],
        capture_output=True, text=True, timeout=300)
    assert shimmed.returncode == 0, shimmed.stderr[-2000:]
    assert shimmed.stdout.strip().splitlines()[-1] == "1 (2, 100, 240) 50"
