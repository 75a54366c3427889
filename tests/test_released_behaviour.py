"""The published recipes run what the released SpeechPrompt code does, and cpu-default keeps bench's choices:
fairseq's stopping rule, v2's IC words, v2's non-injective random verbalizer and its scoring, v2's ESC-50 and
VoxForge splits, fairseq's decoding limit, the pGSLM LM's own F0 bins. Each test fails on bench's earlier behaviour."""

from __future__ import annotations

import math
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bench.core.errors import BenchError
from bench.data.corpora.base import check_corpus, load_corpus
from bench.methods import method_class
from bench.runner.recipes import options_for, task_for_recipe
from bench.tasks.registry import TaskSpec

from tests.test_corpora_adapters import VOXFORGE_AUDIO, _esc50_tree, _voxforge_tree, task as corpus_task
from tests.test_prompt_training import _setup


def _cell(recipe: str, task: str, method: str):
    return method_class(method)(options_for(recipe, task, method))


# ---- 2. fairseq's stopping rule --------------------------------------------------------------------------------
def test_fairseq_valid_loss_is_bits_rounded_to_three_decimals():
    from bench.prompt.trainer import fairseq_valid_loss

    assert fairseq_valid_loss(10.0, 7) == round(10.0 / 7 / math.log(2), 3) == 2.061
    assert fairseq_valid_loss(0.6931, 1) == 1.0  # 0.99996 bits: one rounding step hides the difference


def test_fairseq_stops_on_strict_improvement_and_keeps_tied_checkpoints():
    """should_stop_early counts a tie as no improvement (a < b); checkpoint_best is rewritten on a tie (a <= b)."""
    from bench.prompt.trainer import EarlyStopping

    fs = EarlyStopping("fairseq", patience=2)
    assert [fs.update(e, v) for e, v in enumerate([1.5, 1.5, 1.4, 1.4, 1.4], start=1)] == [
        (True, False), (True, False), (True, False), (True, False), (True, True)]
    assert fs.best_epoch == 5 and fs.best == 1.4
    bench = EarlyStopping("bench", patience=2)
    assert [bench.update(e, v) for e, v in enumerate([1.5, 1.5, 1.4, 1.4, 1.4], start=1)] == [
        (True, False), (False, False), (True, False), (False, False), (False, True)]
    assert bench.best_epoch == 3
    assert EarlyStopping("fairseq", patience=0).update(2, 9.0) == (True, False)  # fairseq: patience <= 0 never stops
    never = EarlyStopping("bench", patience=0)  # bench's default: patience 0 never stops, as fairseq's
    steps = [never.update(e, v) for e, v in enumerate([1.0] + [2.0] * 60, start=1)]
    assert steps == [(True, False)] + [(False, False)] * 60
    assert never.best_epoch == 1
    with pytest.raises(BenchError, match="stopping_rule"):
        EarlyStopping("fairseq-ish")


def test_training_under_the_fairseq_rule_selects_on_rounded_bits_and_keeps_the_last_tie():
    """lr 0: every epoch's valid loss equals the untrained one. bench keeps epoch 1, fairseq the last tied epoch;
    the selected value is the label loss over all target tokens, in bits, rounded to 3 decimals."""
    from bench.prompt.trainer import TrainConfig, fairseq_valid_loss, make_row, train_prompts

    lm, v, model = _setup("random")
    rng = np.random.default_rng(0)
    rows = [make_row(list(rng.integers(4, 16, size=6)), lbl, v, 64)[0] for lbl in "abcabc"]
    runs = {}
    for rule in ("bench", "fairseq"):
        cfg = TrainConfig(lr=0.0, max_epochs=6, batch_size=4, patience=2, loss_normalization="all_tokens",
                          stopping_rule=rule)
        runs[rule] = train_prompts(model, rows, rows, cfg, lm.dictionary.pad, log=lambda s: None)
    assert runs["bench"]["best_epoch"] == 1 and runs["bench"]["epochs_run"] == 3
    assert runs["fairseq"]["best_epoch"] == 3 and runs["fairseq"]["epochs_run"] == 3
    assert "stopping_rule" not in runs["bench"]  # bench's records keep their keys
    labels = sum(3 for _ in rows)  # <s>, the one-token label, </s>
    tokens = sum(len(r.inputs) for r in rows)
    expected = fairseq_valid_loss(runs["fairseq"]["valid_loss_untrained"] * labels, tokens)
    assert runs["fairseq"]["valid_loss_selected_bits"] == [expected] * 3
    assert runs["fairseq"]["best_valid_loss_bits"] == expected
    assert runs["fairseq"]["best_valid_loss"] == runs["fairseq"]["valid_loss_untrained"]  # nats per label token


def test_published_recipes_select_the_fairseq_rule_and_cpu_default_keeps_bench():
    assert options_for("speechprompt-v2", "ks-speech-commands-v1", "prompt-gslm")["stopping_rule"] == "fairseq"
    assert options_for("speechprompt-v1", "ic-fluent-speech-commands", "prompt-gslm")["stopping_rule"] == "fairseq"
    assert options_for("cpu-default", "builtin-ks", "prompt-gslm")["stopping_rule"] == "bench"
    assert method_class("prompt-gslm")(None).config.stopping_rule == "bench"


def test_the_default_grid_keeps_its_configuration_and_so_its_config_hashes():
    """Options added for the published behaviour are left out of the resolved configuration at their default."""
    new = {"stopping_rule", "random_draw", "ic_labels", "fit_f0_bins"}
    for m in ("prompt-gslm", "prompt-gslm-lv", "prompt-pgslm", "prompt-pgslm-lv"):
        assert not new & set(method_class(m)(None).resolved_config()), m
    v2 = _cell("speechprompt-v2", "ic-fluent-speech-commands", "prompt-gslm").resolved_config()
    assert (v2["stopping_rule"], v2["random_draw"], v2["ic_labels"]) == ("fairseq", "independent", "words")
    assert "random_draw" not in _cell("speechprompt-v2", "auc-esc50", "prompt-gslm-lv").resolved_config()
    assert _cell("speechprompt-v2", "auc-esc50", "prompt-pgslm").resolved_config()["fit_f0_bins"] is False


# ---- 3. v2's IC labels are words ---------------------------------------------------------------------------------
FSC_SLOTS = {"action": ["activate", "change_language", "deactivate"], "object": ["none", "lights", "English"],
             "location": ["none", "kitchen"]}


def test_v2_ic_labels_are_the_words_of_action_object_location():
    from bench.prompt.verbalizers import SlotLabels, SlotWordLabels

    words = SlotWordLabels(FSC_SLOTS)
    assert words.symbols == ["activate", "change", "language", "deactivate", "none", "lights", "English", "kitchen"]
    label = "change_language none none"
    released = f"{'change language'} {'none'} {'none'}".split(" ")  # preprocessor.py:77, verbalizer.py:83
    assert [words.symbols[s] for s in words.encode(label)] == released
    assert words.encode(label)[2] == words.encode(label)[3]  # one `none` for object and location
    assert words.decode(words.encode(label)) == label
    assert words.decode(words.encode("activate lights kitchen")) == "activate lights kitchen"
    assert words.decode([words.index["change"], words.index["none"], words.index["none"]]) is None
    assert words.decode([words.index["kitchen"], words.index["none"], words.index["none"]]) is None
    assert SlotLabels(FSC_SLOTS).encode(label) == [1, 3, 6]  # v1: one symbol per slot value


def test_the_v2_recipe_verbalizes_fsc_as_words_and_v1_as_slot_symbols():
    from bench.prompt.engine import num_symbols
    from bench.tasks.registry import TaskRegistry

    fsc = TaskRegistry().get("ic-fluent-speech-commands")
    for m in ("prompt-gslm", "prompt-gslm-lv", "prompt-pgslm", "prompt-pgslm-lv"):
        assert options_for("speechprompt-v2", fsc, m)["ic_labels"] == "words"
    assert options_for("speechprompt-v1", fsc, "prompt-gslm").get("ic_labels", "slots") == "slots"
    # FSC: 6 + 14 + 4 = 24 slot values; words: 7 action words + 14 objects + 3 more locations ('none' shared)
    assert num_symbols(fsc) == 24
    assert num_symbols(fsc, "words") == 7 + 14 + 3


# ---- 4. v2's random verbalizer is not injective --------------------------------------------------------------------
def _merging_verbalizer():
    from bench.prompt.verbalizers import ClassLabels, random_verbalizer
    from bench.lms.model import UnitDictionary

    space = ClassLabels([f"c{i}" for i in range(8)])
    units = [np.arange(10)]
    for seed in range(50):
        v = random_verbalizer(space, UnitDictionary.from_units(12), units, seed, "independent", space.symbols)
        if v.info["shared_units"]:
            return v
    raise AssertionError("8 labels over 10 units never collided in 50 seeds")


def test_the_released_random_draw_lets_labels_share_a_unit_and_says_so():
    from bench.prompt.verbalizers import ClassLabels, random_verbalizer
    from bench.lms.model import UnitDictionary

    v = _merging_verbalizer()
    assert not v.injective and v.info["draw"] == "independent"
    assert len(set(v.info["units"])) < 8
    again = random_verbalizer(v.space, UnitDictionary.from_units(12), [np.arange(10)], v.info["seed"],
                              "independent", v.space.symbols)
    assert again.info["units"] == v.info["units"]  # seeded
    distinct = random_verbalizer(ClassLabels(v.space.symbols), UnitDictionary.from_units(12), [np.arange(10)], 0)
    assert distinct.injective and len(set(distinct.info["units"])) == 8 and "draw" not in distinct.info


def test_labels_sharing_a_unit_count_as_correct_for_each_other():
    """The released scoring compares the generated units with the verbalized reference."""
    from bench.prompt.trainer import Decoded, to_predictions

    v = _merging_verbalizer()
    unit, (a, b, *_) = next(iter(v.info["shared_units"].items()))
    out = v.target_outputs(a)
    assert out == v.target_outputs(b)
    decoded = [Decoded(out, np.zeros(3), True), Decoded(out, np.zeros(3), True)]
    hyps, _, unmapped = to_predictions(decoded, v, False, [a, b])
    assert hyps == [a, b] and unmapped == 0
    other = next(s for s in v.space.symbols if v.target_outputs(s) != out)
    assert to_predictions(decoded[:1], v, False, [other])[0] != [other]


def test_the_v2_recipe_draws_independently_and_cpu_default_one_to_one():
    assert options_for("speechprompt-v2", "scr-grabo", "prompt-gslm")["random_draw"] == "independent"
    assert options_for("speechprompt-v2", "scr-grabo", "prompt-pgslm")["random_draw"] == "independent"
    assert options_for("cpu-default", "builtin-ks", "prompt-gslm")["random_draw"] == "distinct"


# ---- 5. v2's ESC-50 and VoxForge splits ----------------------------------------------------------------------------
def test_esc50_v2_valid_split_is_the_released_train_test_split(tmp_path):
    import pandas as pd
    from sklearn.model_selection import train_test_split

    spec = corpus_task("auc-esc50")
    _esc50_tree(tmp_path, spec.labels)
    # GSLM/preprocess/AuC_esc50/preprocessor.py:24-30 with config.yaml's valid_ratio 0.2, test_fold 1
    meta = pd.read_csv(tmp_path / "meta" / "esc50.csv")
    _, released_valid = train_test_split(meta[meta["fold"] != 1], test_size=0.2, random_state=1)
    m = load_corpus(task_for_recipe("speechprompt-v2", spec), tmp_path)
    assert {Path(e.path).name for e in m.split("valid")} == set(released_valid["filename"])
    assert m.sizes() == {"train": 12, "valid": 4, "test": 4}
    bench = load_corpus(spec, tmp_path)
    assert {Path(e.path).name for e in bench.split("valid")} != set(released_valid["filename"])
    assert check_corpus(spec, tmp_path).speaker_disjoint is True  # bench's default keeps recordings together


def test_voxforge_v2_split_is_the_released_file_shuffle_sharing_speakers(tmp_path):
    _voxforge_tree(tmp_path)
    spec = corpus_task("lid-voxforge", languages=["de", "fr"], sizes=[4, 2, 2])
    m = load_corpus(task_for_recipe("speechprompt-v2", spec), tmp_path)
    for lang in ("de", "fr"):  # GSLM/preprocess/LID_voxforge/dataset.py:56-71, folders walked in sorted order
        audios = []
        for speaker in sorted((tmp_path / lang / VOXFORGE_AUDIO).iterdir()):
            audios += sorted(Path(speaker, "wav").glob("*.wav"))
            if len(audios) > 8:
                break
        random.seed(1)
        random.shuffle(audios)
        for split, part in (("train", audios[:4]), ("valid", audios[4:6]), ("test", audios[6:8])):
            assert [e.path for e in m.split(split) if e.label == lang] == [str(p) for p in part]
    assert m.sizes() == {"train": 8, "valid": 4, "test": 4}
    assert check_corpus(task_for_recipe("speechprompt-v2", spec), tmp_path).speaker_disjoint is False
    assert check_corpus(spec, tmp_path).speaker_disjoint is True  # bench's default does not


def test_only_the_v2_recipe_changes_the_esc50_and_voxforge_splits():
    from bench.tasks.registry import TaskRegistry

    reg = TaskRegistry()
    for t in ("auc-esc50", "lid-voxforge"):
        assert task_for_recipe("speechprompt-v2", reg.get(t)).data.params["split"] == "v2"
        assert "split" not in task_for_recipe("cpu-default", reg.get(t)).data.params


# ---- 6. fairseq's decoding limit -------------------------------------------------------------------------------
EOS = -1


def _fairseq_steps(source_len: int, wanted: list[int], max_len: int, finishes: bool) -> tuple[list[int], bool]:
    """fairseq SequenceGenerator's loop for an LM prompt (sequence_generator.py:341-393): steps 0..source_len force
    the prefix (units and <s>) while step < max_len, at step >= max_len only </s> is allowed; greedy otherwise."""
    out = []
    for step in range(max_len + 1):
        if step >= max_len:
            return out, True
        if step <= source_len:
            continue
        k = step - source_len - 1
        tok = wanted[k] if k < len(wanted) else EOS if finishes else 99
        if tok == EOS:
            return out, True
        out.append(tok)
    raise AssertionError("fairseq always ends by step max_len")


@pytest.mark.parametrize("finishes", [True, False])
def test_the_whole_sequence_limit_matches_fairseqs_generator(finishes):
    from bench.prompt.engine import cap_total_length
    from bench.prompt.trainer import Decoded

    wanted = [7, 8, 9]
    for n in range(140, 153):
        d = Decoded(list(wanted), np.zeros(3), finishes)
        cut = cap_total_length(d, n, 150)
        out, finished = _fairseq_steps(n, wanted, 150, finishes)
        if not finishes and len(wanted) < 150 - n - 1:
            assert cut is d  # bench's own decoding limit stopped first: unfinished, as decoded
            continue
        assert (cut.outputs, cut.finished) == (out, finished), n


def test_a_one_token_label_is_still_right_one_unit_before_the_limit():
    from bench.prompt.engine import cap_total_length
    from bench.prompt.trainer import Decoded

    d = Decoded([5], np.zeros(3), True)
    assert cap_total_length(d, 148, 150) is d  # 148 units + <s> + label at step 149, </s> forced at 150
    none = cap_total_length(d, 149, 150)
    assert none.outputs == [] and none.finished  # no room: an empty (wrong) hypothesis, as fairseq's


# ---- 7. pGSLM under a published recipe requires the LM's own F0 bins --------------------------------------------
class _NoFitting:
    def quantizer(self, *a, **k):
        raise AssertionError("fitted F0 bins on task data")


def test_published_pgslm_refuses_to_fit_f0_bins_on_task_data():
    from bench.methods.prompt_pgslm import _f0_quantizer, require_lm_f0_bins

    # The v2 recipe names the released bins (f0_bins: pgslm_f0_bins, refused up front when not configured); the
    # method's own guard is for a run that drops them (-o prompt-pgslm.f0_bins=...) while fit_f0_bins stays false.
    assert options_for("speechprompt-v2", "auc-esc50", "prompt-pgslm")["f0_bins"] == "pgslm_f0_bins"
    method = method_class("prompt-pgslm")({**options_for("speechprompt-v2", "auc-esc50", "prompt-pgslm"),
                                           "f0_bins": None})
    assert method.config.fit_f0_bins is False
    source = SimpleNamespace(units={"kmeans": "km.bin"}, checkpoint=Path("/models/pgslm/checkpoint_best.pt"))
    lm_cfg = SimpleNamespace(f0_bins=32, discrete_f0=True)
    with pytest.raises(BenchError) as err:
        _f0_quantizer(method, lm_cfg, source, _NoFitting(), None, [], [], {})
    msg = str(err.value)
    assert "\n" not in msg and "pgslm_f0_bins" in msg and "f0_bins" in msg
    require_lm_f0_bins(method, SimpleNamespace(units={"f0_bins": "f0_bins.json"}, checkpoint=source.checkpoint))
    given = method_class("prompt-pgslm")({**options_for("speechprompt-v2", "auc-esc50", "prompt-pgslm"),
                                          "f0_bins": "pgslm_f0_bins"})
    require_lm_f0_bins(given, source)
    require_lm_f0_bins(method_class("prompt-pgslm")(None), source)  # cpu-default: fits on task data


def test_published_pgslm_refuses_before_any_work(tmp_path):
    """prepare() runs before the cells: an MS-TLM without bins is refused there, naming the config entry."""
    from bench.lms.multistream import MultiStreamLMConfig, MultiStreamUnitLM
    from bench.lms.multistream_checkpoint import save_multistream_lm
    from bench.methods.base import RunContext

    torch.manual_seed(0)
    path = save_multistream_lm(MultiStreamUnitLM(MultiStreamLMConfig.tiny(8)), tmp_path / "ms_tlm", epoch=46)
    method = method_class("prompt-pgslm")({**options_for("speechprompt-v2", "auc-esc50", "prompt-pgslm"),
                                           "lm": str(path), "kmeans": "km.bin", "f0_bins": None})
    with pytest.raises(BenchError, match="pgslm_f0_bins"):
        method.prepare(RunContext(seed=0, log=lambda s: None))


# ---- the engine runs them together and the record says which ran ---------------------------------------------
def test_one_cell_under_the_released_options_records_what_ran(monkeypatch):
    """A toy prompt method (tests/test_prompt_engine.py's ToyLM and output bias) on an IC slot task with v2's
    options: v2's word labels, the independent random draw, fairseq's stopping rule and decoding limit."""
    import sys
    from dataclasses import dataclass

    from bench.data.manifest import Example, Manifest
    from bench.methods import METHODS
    from bench.methods.base import RunContext
    from bench.prompt.adapters import register_adapter
    from bench.prompt.engine import LoadedLM, PromptTuningConfig, PromptTuningMethod
    from tests.test_prompt_engine import K, OutputBias, ToyLM, source

    register_adapter("output-bias", OutputBias)

    class ToyMethod(PromptTuningMethod):
        name = "toy-prompt"

        @dataclass
        class Config(PromptTuningConfig):
            adapter: str = "output-bias"

        def load_lm(self, ctx):
            return LoadedLM(ToyLM(), {"lm": "toy"})

        def sources(self, task, manifest, splits, ctx, lm):
            return {s: [source([int(e.id[-1]), 3, 4]) for e in exs] for s, exs in splits.items()}, {}

        def lm_shape(self, ctx):
            return 1, 16, K + 4, 0

    monkeypatch.setitem(METHODS, "toy-prompt", f"{__name__}:_ToyMethod")
    monkeypatch.setattr(sys.modules[__name__], "_ToyMethod", ToyMethod, raising=False)
    slots = {"action": ["activate", "change_language"], "object": ["none", "lights"], "location": ["none"]}
    task = TaskSpec(name="toy-ic", version=1, family="IC", kind="classification", origin="synthetic",
                    description="x", slots=slots, metrics=["accuracy"], data={"source": "manifest", "path": "x"})
    labels = ["activate lights none", "change_language none none"]
    exs = [Example(id=f"{s}{i}", path="x.wav", label=labels[i % 2], split=s, speaker="s")
           for s in ("train", "valid", "test") for i in range(4)]
    opts = {"max_epochs": 3, "batch_size": 4, "ic_labels": "words", "random_draw": "independent",
            "stopping_rule": "fairseq", "max_total_len": 150, "loss_normalization": "all_tokens"}
    out = method_class("toy-prompt")(opts).run(task, Manifest(exs, root="."), RunContext(seed=0, log=lambda s: None))
    verbalizer = out.info["verbalizer"]
    assert verbalizer["label_space"] == "slot_words" and verbalizer["num_symbols"] == 5
    assert verbalizer["draw"] == "independent" and "shared_units" in verbalizer
    assert out.info["stopping_rule"] == "fairseq" and len(out.info["valid_loss_selected_bits"]) >= 1
    assert all(h in labels or h == "" for h in out.predictions.hypotheses)


def test_a_resumed_cell_continues_fairseqs_stopping_state(tmp_path, monkeypatch):
    """The per-epoch resume state (bench.methods.checkpointing) carries the fairseq rule's counters and selected
    values: killed after epoch 2 and run again, training ends as an uninterrupted run does."""
    from bench.methods import checkpointing
    from bench.prompt.trainer import TrainConfig, make_row, train_prompts

    monkeypatch.setenv("BENCH_RESUME_EVERY_S", "0")

    def train(resume, stop_after=None):
        lm, v, model = _setup("random")
        rng = np.random.default_rng(0)
        rows = [make_row(list(rng.integers(4, 16, size=6)), lbl, v, 64)[0] for lbl in "abcabcabc"]
        real = checkpointing.save_state

        def save(directory, state, generator=None):
            real(directory, state, generator)
            if state["epoch"] == stop_after:
                raise KeyboardInterrupt

        monkeypatch.setattr(checkpointing, "save_state", save)
        cfg = TrainConfig(max_epochs=6, batch_size=4, patience=2, lr=2e-2, loss_normalization="all_tokens",
                          stopping_rule="fairseq")
        try:
            return train_prompts(model, rows, rows[:6], cfg, lm.dictionary.pad, log=lambda s: None, resume=resume)
        finally:
            monkeypatch.setattr(checkpointing, "save_state", real)

    plain = train(None)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "p", stop_after=2)
    resumed = train(tmp_path / "p")
    assert resumed == plain and len(plain["valid_loss_selected_bits"]) == plain["epochs_run"]
