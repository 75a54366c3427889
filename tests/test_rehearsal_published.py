"""The real-format rehearsal at test size: random-weight checkpoints in the published formats (GSLM's fairseq ULM
+ dict.txt, joblib MiniBatchKMeans km.bin 100 × 768, s3prl-converted HuBERT Base for hubert_local, pGSLM's MS-TLM
and its {32: edges} F0 bins), configured under their published names, mini corpora in the official layouts, and
`bench run --recipe speechprompt-v2/-v1` with every method and no -o: the recipes resolve the models themselves,
every record names each file with its sha256, and `bench compare --reference` lines them up with the papers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("rehearsal_published", REPO / "benchmarks" / "rehearsal_published.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_published_recipes_run_end_to_end_on_published_format_checkpoints(tmp_path):
    script = _script()
    result = script.rehearse(tmp_path, shape="tiny", limit=4, max_epochs=1)
    assert result["problems"] == []
    records = {(r["method"], r["task"], r["config"]["recipe"]): r
               for r in (json.loads(p.read_text()) for p in tmp_path.rglob("seed-0.json"))}
    methods = {"linear", "prompt-gslm", "prompt-gslm-lv", "prompt-pgslm", "prompt-pgslm-lv"}
    for recipe, tasks in script.RUNS.items():
        for task in tasks:
            assert {m for m, t, r in records if t == task and r == recipe} == methods, (recipe, task)
    rec = records[("prompt-pgslm", "auc-esc50", "speechprompt-v2")]
    models = rec["config"]["models"]
    assert Path(models["pgslm_ms_tlm"]["file"]).name == "discrete_prosody_shift_1_1.pt"
    assert Path(models["pgslm_f0_bins"]["file"]).name == "mean_norm_log_f0_seg_bin.th"
    assert rec["config"]["method"]["units_upstream_path"] == models["hubert_base"]["file"]  # resolved, no -o
    assert rec["info"]["prosody"]["f0_bins_source"] == "pgslm_f0_bins"  # the LM's own bins, not fitted ones
    gslm = records[("prompt-gslm", "ks-speech-commands-v1", "speechprompt-v1")]
    assert gslm["info"]["lm"]["provenance"]["epoch"] == 46 and not gslm["info"]["lm"]["default_offline_lm"]
    for recipe in script.RUNS:
        assert "paper:" in result["compare"][recipe] and "(stand-in)" not in result["compare"][recipe]
    assert result["timings"]["refusal_s"] < 10


def test_the_rehearsal_builds_its_corpora_with_the_adapter_tests_mini_trees(tmp_path, bench_home):
    """The corpora come from bench.data.minitrees (no import from tests/): each loads through its adapter."""
    from bench.data.corpora.base import check_corpus
    from bench.tasks.registry import TaskRegistry

    roots = _script().build_corpora(tmp_path)
    reg = TaskRegistry()
    for task, key in (("ks-speech-commands-v1", "speech_commands_v1"), ("ic-fluent-speech-commands",
                                                                         "fluent_speech_commands"),
                      ("auc-esc50", "esc50")):
        assert check_corpus(reg.get(task), roots[key]).ok, task
