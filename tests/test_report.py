"""``bench report`` (issue 27, item 2): one static page from the records alone. Its numbers are those of the
leaderboard code and the metric definitions (not recomputed differently); it renders in a real headless browser
with every figure loaded and no console error; the learnable verbalizer's weights reach the record's ``info``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bench.results import report as rp

REPO = Path(__file__).resolve().parents[1]
BUILTIN = REPO / "leaderboards" / "records" / "builtin"
BROWSER_TASKS = ("builtin-ks", "builtin-asr")  # one classification and one generation task keep the test short


def _rec(seed, refs, hyps, task="t", method="m", scores=None, info=None):
    return {"task": task, "method": method, "upstream": "u", "seed": seed, "scores": scores or {"accuracy": 0.0},
            "outputs": {"ids": [f"u{i}" for i in range(len(refs))], "references": refs, "hypotheses": hyps},
            "info": info or {}}


# ---- the figures' numbers ------------------------------------------------------------------------------------
def test_confusion_counts_sum_seeds_and_keep_unmapped_outputs_apart():
    a = _rec(0, ["x", "x", "y", "y"], ["x", "y", "y", ""])
    b = _rec(1, ["x", "x", "y", "y"], ["x", "x", "z", "y"])
    labels, cols, counts = rp.confusion_counts([a, b])
    assert labels == ["x", "y"] and cols == ["x", "y", rp.UNMAPPED, "z"]
    assert counts.tolist() == [[3, 1, 0, 0], [0, 2, 1, 1]]
    assert counts.sum() == 8  # every utterance of every seed once


def test_confusion_pools_rare_labels_beyond_the_cap():
    refs = ["a"] * 5 + ["b"] * 4 + ["c"] * 1
    labels, cols, counts = rp.confusion_counts([_rec(0, refs, refs)], max_classes=2)
    assert labels == cols == ["a", "b", "(other)"]
    assert counts.tolist() == [[5, 0, 0], [0, 4, 0], [0, 0, 1]]


def test_length_buckets_cover_every_length_once():
    lengths = [3, 3, 4, 5, 8, 9, 12, 20, 20, 21]
    buckets = rp.length_buckets(lengths, k=4)
    assert buckets[0][0] == 3 and buckets[-1][1] == 21
    assert all(hi >= lo for lo, hi in buckets) and all(b[0] == a[1] + 1 for a, b in zip(buckets, buckets[1:]))
    assert sum(sum(lo <= n <= hi for lo, hi in buckets) for n in lengths) == len(lengths)
    assert rp.reference_length("play B-artist adele E-artist now") == len("play adele now")


def test_metric_by_length_is_the_metric_on_the_bucket_mean_over_seeds():
    """Each bucket's value is bench.tasks.metrics.compute on that bucket's utterances, averaged over seeds, and its
    interval brackets it (the bootstrap of bench.results.stats)."""
    from bench.tasks.metrics import compute

    refs = ["a b", "c d", "a long sentence here", "another long one here too"]
    s0 = _rec(0, refs, ["a b", "c x", "a long sentense here", "another one here"], scores={"wer": 0, "cer": 0})
    s1 = _rec(1, refs, ["a", "c d", "a long sentence here", "nother long one here to"], scores={"wer": 0, "cer": 0})
    buckets = [(0, 3), (4, 100)]
    for metric in ("wer", "cer"):
        rows = rp.metric_by_length([s0, s1], metric, buckets, B=200)
        assert [r["n"] for r in rows] == [2, 2]
        for r, idx in zip(rows, ([0, 1], [2, 3])):
            want = np.mean([compute(metric, [refs[i] for i in idx], [s["outputs"]["hypotheses"][i] for i in idx])
                            for s in (s0, s1)])
            assert r["value"] == pytest.approx(want)
            assert r["ci_low"] <= r["value"] <= r["ci_high"]


def test_duration_buckets_and_metric_by_duration_use_the_records_seconds():
    """Quantile buckets of durations are disjoint and hold every utterance once; the metric by duration bucket is
    the metric on the utterances of that duration (not of that reference length); a record without ``seconds``
    (written before they were stored) gives no duration axis."""
    from bench.tasks.metrics import compute

    secs = [0.5, 0.5, 0.75, 1.2, 1.3, 2.0, 2.0, 2.0, 3.25, 4.0]
    buckets = rp.duration_buckets(secs, k=4)
    assert buckets[0][0] == 0.5 and buckets[-1][1] == 4.0
    assert all(a[1] < b[0] for a, b in zip(buckets, buckets[1:]))
    assert sum(sum(lo <= x <= hi for lo, hi in buckets) for x in secs) == len(secs)

    refs = ["a b", "c d", "e f", "g h"]  # equal reference lengths: only the durations tell the utterances apart
    s0 = _rec(0, refs, ["a b", "c x", "e f", "x y"], scores={"wer": 0})
    s1 = _rec(1, refs, ["a b", "c d", "e", "g h"], scores={"wer": 0})
    for r in (s0, s1):
        r["outputs"]["seconds"] = [3.0, 1.0, 1.0, 3.0]
    axis = rp.utterance_durations([s0, s1])
    assert axis == {"u0": 3.0, "u1": 1.0, "u2": 1.0, "u3": 3.0}
    rows = rp.metric_by_length([s0, s1], "wer", rp.duration_buckets(list(axis.values()), k=2), B=200, axis=axis)
    assert [(r["low"], r["high"], r["n"]) for r in rows] == [(1.0, 1.0, 2), (3.0, 3.0, 2)]
    for r, idx in zip(rows, ([1, 2], [0, 3])):
        want = np.mean([compute("wer", [refs[i] for i in idx], [s["outputs"]["hypotheses"][i] for i in idx])
                        for s in (s0, s1)])
        assert r["value"] == pytest.approx(want)
    del s1["outputs"]["seconds"]  # an older record of the same test set reads its durations from the newer one
    assert rp.utterance_durations([s0, s1]) == axis
    s1["outputs"]["seconds"] = [3.0, 1.0, 1.0, 2.5]  # not the same audio: no duration axis
    assert rp.utterance_durations([s0, s1]) is None
    del s0["outputs"]["seconds"], s1["outputs"]["seconds"]
    assert rp.utterance_durations([s0, s1]) is None


def test_utterance_seconds_reads_segments_and_file_headers(tmp_path):
    import soundfile as sf

    from bench.data.manifest import Example, Manifest
    from bench.results.records import utterance_seconds

    sf.write(tmp_path / "a.wav", np.zeros(16000 * 3 // 2 + 7, dtype="float32"), 16000)  # 1.500 4375 s
    sf.write(tmp_path / "b.flac", np.zeros(8000, dtype="float32"), 8000)
    m = Manifest([Example("a", "a.wav", "x", "test"), Example("b", "b.flac", "y", "test"),
                  Example("c", "a.wav", "z", "test", start=0.25, end=1.0),
                  Example("d", "b.flac", "z", "test", start=0.25)], root=tmp_path)
    assert utterance_seconds(m, ["b", "a", "c", "d"]) == [1.0, 1.5, 0.75, 0.75]
    assert utterance_seconds(m, ["a", "missing"]) is None
    (tmp_path / "b.flac").unlink()
    assert utterance_seconds(m, ["a", "b"]) is None  # no header to read: no seconds, not a failed run


def test_loss_curves_read_both_history_layouts():
    base = {"info": {"history": [{"epoch": 1, "train_loss": 2.0, "valid_loss": 1.5},
                                 {"epoch": 2, "train_loss": 1.0, "valid_loss": 1.2}], "best_epoch": 2}}
    prompt = {"info": {"train_loss": [3.0, 2.0, 1.0], "valid_loss": [2.5, 2.0, 2.1], "best_epoch": 2}}
    assert rp.loss_curves(base) == ([2.0, 1.0], [1.5, 1.2], 2)
    assert rp.loss_curves(prompt) == ([3.0, 2.0, 1.0], [2.5, 2.0, 2.1], 2)


def test_rule_based_verbalizer_map_reads_units_not_the_sorted_mapping_order():
    """Records store ``mapping`` with sorted keys and ``units`` in label order: the unit of each label is read off
    its token (GSLM's dictionary: 4 specials first; the MS-TLM: unit u is token u), checked in a committed record."""
    import json

    ks = json.loads(next((BUILTIN / "builtin-ks" / "prompt-gslm").glob("*/*/seed-0.json")).read_text())
    v = ks["info"]["verbalizer"]
    got = rp.verbalizer_units(ks)
    assert got["yes"] == f"unit {v['mapping']['yes'] - 4}" and got["yes"] == f"unit {v['units'][0]}"  # yes: 1st label
    assert sorted(int(x.split()[1]) for x in got.values()) == sorted(v["units"])
    pg = {"info": {"verbalizer": {"method": "random", "mapping": {"a": 7, "b": 3}, "units": [3, 7]}}}
    assert rp.verbalizer_units(pg) == {"a": "unit 7", "b": "unit 3"}
    odd = {"info": {"verbalizer": {"method": "random", "mapping": {"a": 50, "b": 3}, "units": [3, 7]}}}
    assert rp.verbalizer_units(odd) == {"a": "token 50", "b": "token 3"}  # no consistent offset: tokens named


# ---- the learnable verbalizer's weights reach the record ------------------------------------------------------
def test_learnable_verbalizer_weights_are_kept_in_info_and_drawn(tmp_path):
    """prompt tuning with v2's learnable verbalizer on a tiny GSLM ULM: ``info.verbalizer.weights`` is the trained
    (C+4) × |V| matrix (slots <s> <pad> </s> <unk> then the labels; the LM's tokens as columns); the report maps
    each label to its heaviest unit and draws the heat map. A rule-based verbalizer records no weights."""
    import torch

    from bench.data.manifest import Example, Manifest
    from bench.lms.model import UnitDictionary, UnitLanguageModel, UnitLMConfig
    from bench.methods.base import RunContext
    from bench.prompt.engine import LoadedLM, PromptTuningConfig, PromptTuningMethod
    from bench.prompt.unit_lm import GSLMUnitLM, SourceUnits
    from bench.tasks.registry import TaskSpec

    k = 12
    torch.manual_seed(0)
    module = UnitLanguageModel(UnitLMConfig.tiny(k + 4), UnitDictionary.from_units(k)).eval()
    for p in module.parameters():
        p.requires_grad_(False)

    def toy(learnable: bool):
        class Toy(PromptTuningMethod):
            name = "toy-prompt-lv" if learnable else "toy-prompt"
            learnable_verbalizer = learnable

            @dataclass
            class Config(PromptTuningConfig):
                pass

            def load_lm(self, ctx):
                return LoadedLM(GSLMUnitLM(module), {"lm": "tiny"})

            def sources(self, task, manifest, splits, ctx, lm):
                return {s: [SourceUnits(np.array([int(e.id[-1]) % k, 3, 4]), {}) for e in exs]
                        for s, exs in splits.items()}, {}

            def lm_shape(self, ctx):
                return 2, 32, k + 4, 0

        return Toy({"max_epochs": 2, "batch_size": 4, "prompt_length": 2})

    task = TaskSpec(name="toy", version=1, family="KS", kind="classification", origin="synthetic", description="x",
                    labels=["a", "b"], metrics=["accuracy"], data={"source": "manifest", "path": "x"})
    exs = [Example(id=f"{s}{i}", path="x.wav", label="ab"[i % 2], split=s, speaker="s")
           for s in ("train", "valid", "test") for i in range(4)]
    out = toy(True).run(task, Manifest(exs, root="."), RunContext(seed=0, log=lambda s: None))
    w = out.info["verbalizer"]["weights"]
    m = np.asarray(w["values"])
    assert m.shape == (2 + 4, k + 4)
    assert w["rows"] == ["<s>", "<pad>", "</s>", "<unk>", "a", "b"]
    assert w["columns"] == UnitDictionary.from_units(k).symbols
    assert np.abs(m).sum() > 0
    rec = {"seed": 0, "info": out.info}
    mapped = rp.verbalizer_units(rec)
    assert mapped["a"] == f"slot 4 → unit {w['columns'][int(np.argmax(m[4]))]}"
    assert rp.plot_verbalizer_weights("toy", "toy-prompt-lv", rec, tmp_path / "v.png").stat().st_size > 0

    rule = toy(False).run(task, Manifest(exs, root="."), RunContext(seed=0, log=lambda s: None))
    assert "weights" not in rule.info["verbalizer"]
    assert set(rp.verbalizer_units({"info": rule.info}).values()) <= {f"unit {u}" for u in range(k)}


def test_learnable_verbalizer_weights_name_the_ms_tlm_tokens():
    """On pGSLM's MS-TLM (units 0..K-1, then <s> <pad> </s> <unk>) the columns name units and specials by token."""
    import torch

    from bench.lms.multistream import MultiStreamLMConfig, MultiStreamUnitLM
    from bench.prompt.adapters import AdapterSpec
    from bench.prompt.engine import learnable_verbalizer_weights
    from bench.prompt.modules import PromptSet
    from bench.prompt.unit_lm import PGSLMUnitLM
    from bench.prompt.verbalizers import ClassLabels, build_verbalizer

    k = 12
    torch.manual_seed(0)
    lm = PGSLMUnitLM(MultiStreamUnitLM(MultiStreamLMConfig.tiny(k, f0_bins=8, num_heads=4)).eval())
    verb = build_verbalizer("learnable", ClassLabels(["x", "y", "z"]), lm.vocab, [], ["x", "y"], 0)
    adapter = PromptSet.build(lm, AdapterSpec(2, True, "bos_row"), verb.output_size)
    w = learnable_verbalizer_weights(adapter, verb, lm)["weights"]
    assert w["columns"] == [str(u) for u in range(k)] + ["<s>", "<pad>", "</s>", "<unk>"]
    assert w["rows"] == ["<s>", "<pad>", "</s>", "<unk>", "x", "y", "z"]
    assert np.allclose(w["values"], adapter.verbalizer.linear.weight.detach().numpy(), rtol=1e-5, atol=1e-7)


# ---- the page, in a real browser ---------------------------------------------------------------------------------
def _records_subset(tmp_path: Path) -> Path:
    res = tmp_path / "records"
    for t in BROWSER_TASKS:
        shutil.copytree(BUILTIN / t, res / t)
    return res


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _browser(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def test_report_page_renders_in_headless_chromium(tmp_path, capsys):
    """The page built from committed records opens in Chromium from a file:// URL: every <img> decoded
    (naturalWidth > 0) and is a figure the report wrote, no script error, console error/warning or failed load,
    and the leaderboard cells are those `bench compare` computes. The screenshot is kept as a test artefact."""
    binary = _chromium()
    if binary is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI is set but no chromium is installed: .ci/run installs Debian's chromium when missing")
        pytest.skip("chromium is not installed (apt-get install -y chromium); under CI=true this test fails instead")
    from bench.results.compare import build_leaderboard, records_frame, summarize

    res = _records_subset(tmp_path)
    out = tmp_path / "report"
    rep = rp.build_report([res], out)
    page = rep.index.read_text()

    # the numbers: the leaderboard's cells as compare computes them, every figure on the page and on disk
    df = records_frame([res])
    lb = build_leaderboard(summarize(df[df["main"]]))
    for cell in [c for c in lb.scores.to_numpy().ravel() if isinstance(c, str)]:
        assert f"<td>{cell}</td>" in page or f'<td class="best">{cell}</td>' in page, cell
    names = {f.name for f in rep.figures}
    verbalizers = {f"verbalizer-builtin-{t}-{m}-whisper-tiny-en.png" for t in ("ks", "asr")
                   for m in ("prompt-gslm-lv", "prompt-pgslm-lv")}  # the committed records store their weights
    assert names == {"score-vs-params.png", "confusion-builtin-ks.png", "curves-builtin-ks.png",
                     "length-builtin-asr.png", "duration-builtin-asr.png", "curves-builtin-asr.png",
                     "layer-weights-whisper-tiny-en.png", *verbalizers}
    assert set(re.findall(r'<img src="([^"]+)"', page)) == names
    assert all((out / n).stat().st_size > 1000 for n in names)
    assert "http://" not in page and "https://" not in page  # nothing to fetch: it opens offline
    assert "By utterance duration: not shown" not in page  # the committed records store outputs.seconds

    url = rep.index.resolve().as_uri()
    dom = _browser(binary, tmp_path / "profile", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body, dom.stdout[:500]
    attrs = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', body.group(1)))
    assert attrs.get("data-figures-total") == str(len(names)), attrs
    assert attrs.get("data-figures-loaded") == str(len(names)), attrs
    assert attrs.get("data-errors") == "0", attrs.get("data-error-list")
    console = [line for line in dom.stderr.splitlines() if re.search(r"CONSOLE[:(]", line)]
    assert not console, console  # the page logs nothing; any console line is a problem

    # the check can fail: the same page with one figure missing reports it
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "confusion-builtin-ks.png").unlink()
    dom = _browser(binary, tmp_path / "profile3", "--dump-dom", (broken / "index.html").resolve().as_uri())
    attrs = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', re.search(r"<body([^>]*)>", dom.stdout).group(1)))
    assert attrs["data-figures-loaded"] == str(len(names) - 1) and attrs["data-errors"] == "1", attrs

    artefacts = Path(os.environ.get("BENCH_TEST_ARTEFACTS") or tmp_path)
    artefacts.mkdir(parents=True, exist_ok=True)
    shot = artefacts / "bench-report-screenshot.png"
    s = _browser(binary, tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1280,2000",
                 "--hide-scrollbars", url)
    assert s.returncode == 0 and shot.is_file() and shot.stat().st_size > 10_000, s.stderr[-2000:]
    with capsys.disabled():  # shown in a plain `pytest -q` run too
        print(f"\nreport screenshot: {shot}  (page: {rep.index})")


def test_a_tiny_run_records_durations_and_the_report_draws_them(tmp_path):
    """A real tiny run (builtin-asr, lstm, fbank, 2 epochs) stores each test utterance's duration: the built audio's
    frames / samplerate (soundfile's header), 3 decimals; the report on it has the duration figure beside the
    length one, and (with chromium) the page renders with every figure loaded."""
    import json
    import sys

    import soundfile as sf

    from bench.data.manifest import Manifest

    home, res = tmp_path / "home", tmp_path / "res"
    env = {**os.environ, "COLUMNS": "200", "BENCH_HOME": str(home)}
    r = subprocess.run([sys.executable, "-m", "bench.cli", "run", "--tasks", "builtin-asr", "--methods", "lstm",
                        "--upstream", "fbank", "--size", "tiny", "--limit", "6", "--max-epochs", "2", "--seeds", "0",
                        "--results", str(res)], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    (path,) = (res / "builtin-asr").rglob("seed-0.json")
    out = json.loads(path.read_text())["outputs"]
    (mpath,) = (home / "data" / "builtin-asr").rglob("manifest.jsonl")
    m = Manifest.read(mpath)
    by_id = {e.id: e for e in m}
    want = []
    for i in out["ids"]:
        info = sf.info(str(m.audio_path(by_id[i])))
        want.append(round(info.frames / info.samplerate, 3))
    assert out["seconds"] == want and len(want) >= 2
    assert all(0.3 < x < 20 for x in want)  # spoken sentences, seconds long

    rep = rp.build_report([res], tmp_path / "page")
    names = {f.name for f in rep.figures}
    assert {"length-builtin-asr.png", "duration-builtin-asr.png"} <= names
    page = rep.index.read_text()
    assert 'src="duration-builtin-asr.png"' in page and "By utterance duration: not shown" not in page
    assert (tmp_path / "page" / "duration-builtin-asr.png").stat().st_size > 1000
    old = tmp_path / "old"  # beside a record written before durations were stored: its curve is drawn too
    rec = json.loads(path.read_text())
    del rec["outputs"]["seconds"]
    (old / "builtin-asr").mkdir(parents=True)
    (old / "builtin-asr" / "seed-0.json").write_text(json.dumps(rec))
    both = rp.build_report([res, old], tmp_path / "page-both", labels=["new", "old"])
    assert "duration-builtin-asr.png" in {f.name for f in both.figures}
    assert "old: lstm" in both.index.read_text() and "new: lstm" in both.index.read_text()
    assert "By utterance duration: not shown" not in both.index.read_text()
    binary = _chromium()
    if binary is not None:
        dom = _browser(binary, tmp_path / "profile", "--dump-dom", rep.index.resolve().as_uri())
        attrs = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', re.search(r"<body([^>]*)>", dom.stdout).group(1)))
        assert attrs.get("data-figures-loaded") == str(len(names)) and attrs.get("data-errors") == "0", attrs


def test_bench_report_command_writes_the_page_and_refuses_an_empty_directory(tmp_path):
    """`bench report RESULTS -o DIR` from the command line (one small committed task), and one line, exit 2, for a
    directory without records."""
    import sys

    res = tmp_path / "records"
    shutil.copytree(BUILTIN / "builtin-vad" / "linear", res / "builtin-vad" / "linear")
    env = {**os.environ, "COLUMNS": "200", "BENCH_HOME": str(tmp_path / "home")}
    r = subprocess.run([sys.executable, "-m", "bench.cli", "report", str(res), "-o", str(tmp_path / "page")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "page" / "index.html").read_text()
    assert "builtin-vad" in page and 'src="confusion-builtin-vad.png"' in page and "layer-weights" in page
    (tmp_path / "empty").mkdir()
    r = subprocess.run([sys.executable, "-m", "bench.cli", "report", str(tmp_path / "empty"), "-o",
                        str(tmp_path / "page2")], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2 and "no result records" in r.stderr and "Traceback" not in r.stderr
