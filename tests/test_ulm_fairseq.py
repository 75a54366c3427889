"""A real fairseq ``transformer_lm`` checkpoint (written by fairseq's own Trainer, as fairseq-train does) imports into
bench's GSLM ULM with identical logits; partial or mismatched checkpoints are refused (SpeechPrompt issue #6); what
bench saves, fairseq loads."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

from bench.core.errors import BenchError
from bench.lms.checkpoint import load_unit_lm, save_unit_lm
from bench.lms.model import UnitDictionary

K = 10  # units → vocabulary 14
D, LAYERS, HEADS, FFN = 32, 2, 4, 64


def _quiet():
    warnings.filterwarnings("ignore")
    for name in ("fairseq", "hydra", "omegaconf"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _fairseq_training_setup(data_dir, extra_args=()):
    """cfg, task and model exactly as ``fairseq-train`` builds them from a command line."""
    _quiet()
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        str(data_dir), "--task", "language_modeling", "--arch", "transformer_lm",
        "--decoder-layers", str(LAYERS), "--decoder-embed-dim", str(D), "--decoder-input-dim", str(D),
        "--decoder-output-dim", str(D), "--decoder-ffn-embed-dim", str(FFN), "--decoder-attention-heads", str(HEADS),
        "--decoder-normalize-before", "--share-decoder-input-output-embed", "--tokens-per-sample", "64",
        "--sample-break-mode", "eos", "--dropout", "0.1", "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)",
        "--lr", "5e-4", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "10", "--cpu",
        "--save-dir", str(data_dir), *extra_args])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    return cfg, task, model


def _write_fairseq_checkpoint(cfg, task, model, path, epoch=46):
    """Save through fairseq's Trainer (the code path of fairseq-train's checkpoint_best.pt)."""
    from fairseq.trainer import Trainer

    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    trainer.lr_step(0)
    trainer.consolidate_optimizer()
    trainer.set_num_updates(1234)
    trainer.save_checkpoint(str(path), {"train_iterator": {"version": 2, "epoch": epoch, "iterations_in_epoch": 0,
                                                           "shuffle": True}, "val_loss": 3.5})


@pytest.fixture(scope="module")
def fairseq_lm(tmp_path_factory):
    """A randomised (every weight, layer norms included) fairseq LM and its checkpoint directory."""
    d = tmp_path_factory.mktemp("fairseq_lm")
    # numeric units in a NON-numeric order (as GSLM's CPC dict.txt, frequency-sorted)
    order = [3, 7, 0, 9, 1, 5, 2, 8, 4, 6]
    (d / "dict.txt").write_text("".join(f"{u} {1000 - i}\n" for i, u in enumerate(order)))
    cfg, task, model = _fairseq_training_setup(d)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.dim() == 1 and p.shape[0] == D else 0.0))
    _write_fairseq_checkpoint(cfg, task, model, d / "checkpoint_best.pt")
    model.eval()
    return d, model, order


def _random_tokens(n, t, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, 4 + K, (n, t), generator=g)


def test_fairseq_checkpoint_imports_with_identical_logits(fairseq_lm):
    d, fs_model, order = fairseq_lm
    lm = load_unit_lm(d / "checkpoint_best.pt")
    assert not lm.training
    assert lm.cfg.num_layers == LAYERS and lm.cfg.embed_dim == D and lm.cfg.num_heads == HEADS
    assert lm.cfg.vocab_size == 4 + K
    tokens = _random_tokens(3, 17, seed=1)
    with torch.no_grad():
        ref = fs_model(tokens)[0]
        ours = lm(tokens)
    assert ours.shape == ref.shape == (3, 17, 4 + K)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    # the dictionary follows dict.txt order: unit u is index 4 + its line number
    assert [lm.dictionary.unit_to_index(u) for u in order] == list(range(4, 4 + K))


def test_padded_batch_matches_fairseq_on_real_positions(fairseq_lm):
    d, fs_model, _ = fairseq_lm
    lm = load_unit_lm(d / "checkpoint_best.pt")
    tokens = _random_tokens(3, 12, seed=2)
    lengths = [12, 7, 3]
    for b, n in enumerate(lengths):
        tokens[b, n:] = lm.dictionary.pad
    with torch.no_grad():
        ref = fs_model(tokens)[0]
        ours = lm(tokens)
        alone = lm(tokens[1:2, :7])
    for b, n in enumerate(lengths):
        torch.testing.assert_close(ours[b, :n], ref[b, :n], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(ours).all()  # pad rows are defined (fairseq's are not guaranteed)
    torch.testing.assert_close(ours[1, :7], alone[0], atol=1e-5, rtol=1e-5)  # padding changes nothing


def test_provenance_records_training_position(fairseq_lm):
    d, _, _ = fairseq_lm
    lm = load_unit_lm(d / "checkpoint_best.pt")
    prov = lm.provenance
    assert prov["epoch"] == 46 and prov["num_updates"] == 1234  # SpeechPrompt: prompt training starts at epoch 46
    assert len(prov["sha1"]) == 40 and prov["checkpoint"].endswith("checkpoint_best.pt")
    assert prov["loaded_keys"] == len(lm.state_dict())


def _tamper(src_dir, dst_dir, edit):
    import shutil

    shutil.copytree(src_dir, dst_dir)
    path = dst_dir / "checkpoint_best.pt"
    state = torch.load(path, map_location="cpu", weights_only=False)
    edit(state)
    torch.save(state, path)
    return path


def test_missing_weight_is_refused(fairseq_lm, tmp_path):
    d, _, _ = fairseq_lm
    path = _tamper(d, tmp_path / "m", lambda s: s["model"].pop("decoder.layers.1.fc2.bias"))
    with pytest.raises(BenchError, match=r"missing weights decoder\.layers\.1\.fc2\.bias"):
        load_unit_lm(path)


def test_unexpected_and_mismatched_weights_are_refused(fairseq_lm, tmp_path):
    d, _, _ = fairseq_lm

    def extra(s):
        s["model"]["decoder.layers.0.self_attn.extra.weight"] = torch.zeros(3)

    with pytest.raises(BenchError, match=r"unexpected weights decoder\.layers\.0\.self_attn\.extra\.weight"):
        load_unit_lm(_tamper(d, tmp_path / "u", extra))

    def shape(s):
        s["model"]["decoder.layers.0.fc1.bias"] = torch.zeros(FFN + 1)

    with pytest.raises(BenchError, match=r"shape mismatches decoder\.layers\.0\.fc1\.bias"):
        load_unit_lm(_tamper(d, tmp_path / "s", shape))


def test_unsupported_settings_and_wrong_dictionary_are_refused(fairseq_lm, tmp_path):
    d, _, _ = fairseq_lm

    def post_ln(s):
        s["cfg"]["model"]["decoder_normalize_before"] = False

    with pytest.raises(BenchError, match="decoder_normalize_before"):
        load_unit_lm(_tamper(d, tmp_path / "p", post_ln))

    def untied(s):
        s["model"]["decoder.output_projection.weight"] = s["model"]["decoder.embed_tokens.weight"] + 1

    with pytest.raises(BenchError, match="ties input and output"):
        load_unit_lm(_tamper(d, tmp_path / "t", untied))

    def learned_positions(s):
        s["cfg"]["model"]["decoder_learned_pos"] = True

    with pytest.raises(BenchError, match="decoder_learned_pos"):
        load_unit_lm(_tamper(d, tmp_path / "l", learned_positions))

    UnitDictionary.from_units(K + 1).save(tmp_path / "dict11.txt")
    with pytest.raises(BenchError, match="wrong dict.txt"):
        load_unit_lm(d / "checkpoint_best.pt", tmp_path / "dict11.txt")
    with pytest.raises(BenchError, match="not found"):
        load_unit_lm(tmp_path / "nothing" / "checkpoint_best.pt")


def test_fairseq_loads_what_bench_saves(fairseq_lm, tmp_path):
    _quiet()
    from fairseq import checkpoint_utils

    d, _, _ = fairseq_lm
    lm = load_unit_lm(d / "checkpoint_best.pt")
    out = save_unit_lm(lm, tmp_path / "saved", extra={"epoch": 3, "num_updates": 77})
    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(out)], strict=True)
    fs = models[0].eval()
    assert len(task.source_dictionary) == len(lm.dictionary)
    assert task.source_dictionary.symbols == lm.dictionary.symbols
    tokens = _random_tokens(2, 9, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(fs(tokens)[0], lm(tokens), atol=1e-5, rtol=1e-5)
    back = load_unit_lm(out)
    assert back.provenance["epoch"] == 3 and back.provenance["num_updates"] == 77
    with torch.no_grad():
        assert torch.equal(back(tokens), lm(tokens))


def test_arch_functions_force_pre_ln_as_in_fairseq(fairseq_lm, tmp_path):
    """``--arch transformer_lm_big`` (GSLM's) runs fairseq's base_lm_architecture, which sets
    decoder_normalize_before=True whatever the stored flag: such a checkpoint must load, and compute what fairseq
    computes; a hydra ``transformer_lm`` with the flag off is post-LN in fairseq and is refused above."""
    _quiet()
    from fairseq import checkpoint_utils

    d, _, _ = fairseq_lm

    def big_flag_off(s):
        s["cfg"]["model"]["_name"] = "transformer_lm_big"
        s["cfg"]["model"]["decoder_normalize_before"] = False

    path = _tamper(d, tmp_path / "b", big_flag_off)
    fs = checkpoint_utils.load_model_ensemble_and_task([str(path)])[0][0].eval()
    assert fs.decoder.layers[0].normalize_before
    lm = load_unit_lm(path)
    tokens = _random_tokens(2, 9, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(lm(tokens), fs(tokens)[0], atol=1e-5, rtol=1e-5)


def test_legacy_args_checkpoint_imports(fairseq_lm, tmp_path):
    """Pre-hydra fairseq checkpoints store an argparse Namespace under 'args' and cfg=None."""
    import argparse

    d, fs_model, _ = fairseq_lm

    def legacy(s):
        model = {k: v for k, v in s["cfg"]["model"].items() if k != "_name"}
        s["args"] = argparse.Namespace(arch="transformer_lm", task="language_modeling", data=str(d), **model)
        s["cfg"] = None

    lm = load_unit_lm(_tamper(d, tmp_path / "legacy", legacy))
    tokens = _random_tokens(2, 9, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(lm(tokens), fs_model(tokens)[0], atol=1e-5, rtol=1e-5)
    assert lm.provenance["epoch"] == 46
