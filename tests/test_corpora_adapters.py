"""Every real-corpus adapter on a miniature tree in the official layout: splits, labels and counts follow the
published rule (or the documented seeded replacement), and a malformed tree names the offending file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.data.corpora.base import check_corpus, load_corpus
# the official-layout mini trees live in bench (benchmarks/rehearsal_published.py builds them too); the short
# names are the ones this file's tests and the tests importing from it use
from bench.data.minitrees import FSC_HEADER
from bench.data.minitrees import esc50_tree as _esc50_tree
from bench.data.minitrees import fluent_commands_tree as _fsc_tree
from bench.data.minitrees import hash_split_speakers as _speakers
from bench.data.minitrees import speech_commands_v1_tree as _gsc_tree
from bench.data.minitrees import tone_wav as wav
from bench.data.minitrees import write_text as text
from bench.core.errors import DataMissingError
from bench.tasks.registry import load_task_file

TASKS = Path(__file__).resolve().parent.parent / "tasks" / "corpora"


# ---- helpers shared by all corpora ----------------------------------------------------------------------------
def task(name: str, **params):
    spec = load_task_file(TASKS / f"{name}.yaml")
    if params:
        spec = spec.model_copy(update={"data": spec.data.model_copy(
            update={"params": {**spec.data.params, **params}})})
    return spec


def by_split(manifest) -> dict[str, list]:
    return {s: manifest.split(s) for s in ("train", "valid", "test")}


def malformed(spec, root: Path) -> str:
    """The error text load_corpus raises, after checking that check_corpus reports the same problem."""
    report = check_corpus(spec, root)
    assert not report.ok
    with pytest.raises(DataMissingError) as err:
        load_corpus(spec, root)
    return str(err.value)


@pytest.fixture(autouse=True)
def _home(bench_home):
    return bench_home


# ---- Speech Commands v0.01 (KS) -------------------------------------------------------------------------------
def test_speech_commands_superb_hash_split_12_classes_and_fixed_silence_crops(tmp_path):
    _gsc_tree(tmp_path)
    spec = task("ks-speech-commands-v1")
    m = load_corpus(spec, tmp_path)
    s = by_split(m)
    # 10 keywords + _unknown_ ("bed"): 2 train speakers, 1 valid speaker each; the 10-20 % hash band is dropped
    assert sum(e.label != "_silence_" for e in s["train"]) == 11 * 2
    assert sum(e.label != "_silence_" for e in s["valid"]) == 11
    assert {e.label for e in s["train"]} == set(spec.labels)
    assert not any(e.speaker == _speakers(None, 1)[0] for e in m)
    # _silence_: mean keyword count per split, 1-s crops, train from the first 90 %, valid from the last 10 %
    sil = {k: [e for e in v if e.label == "_silence_"] for k, v in s.items()}
    assert len(sil["train"]) == 2 and len(sil["valid"]) == 1 and len(sil["test"]) == 1
    for e in sil["train"]:
        assert 0 <= e.start and e.end <= 12.0 * 0.9 + 1e-9 and abs(e.end - e.start - 1.0) < 1e-9
    for e in sil["valid"]:
        assert e.start >= 12.0 * 0.9 - 1e-9 and e.end <= 12.0 + 1e-9
    assert all(e.start * 16000 == round(e.start * 16000) for e in sil["train"] + sil["valid"])
    # the official test folder, including its own _silence_/_unknown_ folders
    assert sorted(e.label for e in s["test"]) == sorted(["yes", "no", "_silence_", "_unknown_"])
    non_noise = [e for e in m if e.label != "_silence_" or e.split == "test"]
    assert len({e.speaker for e in non_noise if e.split == "train"} & {e.speaker for e in non_noise
                                                                      if e.split == "valid"}) == 0
    # deterministic; the crop seed is part of the recorded split
    assert load_corpus(spec, tmp_path).checksum() == m.checksum()
    assert load_corpus(task("ks-speech-commands-v1", seed=1), tmp_path).checksum() != m.checksum()


def test_speech_commands_missing_noise_folder_and_unknown_test_class_are_named(tmp_path):
    _gsc_tree(tmp_path)
    spec = task("ks-speech-commands-v1")
    wav(tmp_path / "speech_commands_test_set_v0.01" / "bogus" / "a_nohash_0.wav")
    assert "bogus" in malformed(spec, tmp_path) and "not one of the task's labels" in malformed(spec, tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "speech_commands_test_set_v0.01" / "bogus")
    shutil.rmtree(tmp_path / "speech_commands_v0.01" / "_background_noise_")
    msg = malformed(spec, tmp_path)
    assert "missing: " in msg and "_background_noise_" in msg and "download.tensorflow.org" in msg


# ---- Fluent Speech Commands (IC) ------------------------------------------------------------------------------
def test_fluent_commands_official_splits_and_space_free_slot_values(tmp_path):
    _fsc_tree(tmp_path)
    m = load_corpus(task("ic-fluent-speech-commands"), tmp_path)
    assert m.sizes() == {"train": 3, "valid": 1, "test": 1}
    labels = {e.label for e in m.split("train")}
    assert labels == {"activate lights none", "change_language none none", "increase heat kitchen"}
    assert m.split("test")[0].speaker == "spkD"


def test_fluent_commands_bad_slot_value_and_missing_csv_are_named(tmp_path):
    _fsc_tree(tmp_path)
    spec = task("ic-fluent-speech-commands")
    csv_path = tmp_path / "data" / "valid_data.csv"
    text(csv_path, FSC_HEADER + "0,wavs/speakers/spkC/valid-0.wav,spkC,Jump,jump,none,none\n")
    msg = malformed(spec, tmp_path)
    assert f"{csv_path}:2" in msg and "action 'jump'" in msg
    csv_path.unlink()
    assert str(csv_path) in "\n".join(check_corpus(spec, tmp_path).missing)


# ---- LibriSpeech (ASR) ----------------------------------------------------------------------------------------
def _libri_tree(root: Path) -> None:
    for subset, spk in (("train-clean-100", "19"), ("dev-clean", "84"), ("test-clean", "61")):
        d = root / subset / spk / "198"
        text(d / f"{spk}-198.trans.txt", f"{spk}-198-0000 HELLO WORLD\n{spk}-198-0001 IT'S  A TEST\n")
        for u in ("0000", "0001"):
            wav(d / f"{spk}-198-{u}.flac", flac=True)


def test_librispeech_subsets_transcripts_and_speakers(tmp_path):
    _libri_tree(tmp_path)
    m = load_corpus(task("asr-librispeech"), tmp_path)
    assert m.sizes() == {"train": 2, "valid": 2, "test": 2}
    e = {x.id: x for x in m}["train-clean-100/19-198-0001"]
    assert e.label == "it's a test" and e.speaker == "19" and e.path.endswith(".flac")
    assert {x.speaker for x in m.split("test")} == {"61"}


def test_librispeech_transcript_line_without_text_is_named(tmp_path):
    _libri_tree(tmp_path)
    tf = tmp_path / "dev-clean" / "84" / "198" / "84-198.trans.txt"
    text(tf, "84-198-0000 HELLO\n84-198-0001\n")
    assert f"{tf}:2" in malformed(task("asr-librispeech"), tmp_path)


# ---- Audio SNIPS (SF) -----------------------------------------------------------------------------------------
SNIPS_LINES = {
    "train-0": ("BOS add sabrina salerno to the grime instrumentals playlist EOS",
                "O O B-artist I-artist O O B-playlist I-playlist O AddToPlaylist"),
    "valid-0": ("BOS what is the weather in Paris EOS", "O O O O O O city GetWeather"),
    "test-0": ("BOS play Beyoncé now EOS", "O O B-artist O PlayMusic"),
}


def _snips_tree(root: Path) -> None:
    lines = []
    for split, speakers in (("train", ["Ivy", "Joanna", "Aditi"]), ("valid", ["Amy"]), ("test", ["Brian"])):
        key = f"{split}-0"
        words, tags = SNIPS_LINES[key]
        for spk in speakers:
            uid = f"{spk}-snips-{split}-0"
            wav(root / split / f"{uid}.wav")
            lines.append(f"{uid} {words}\t{tags}\n")
    text(root / "all.iob.snips.txt", "".join(lines))


def test_snips_superb_speaker_split_and_tagged_targets(tmp_path):
    _snips_tree(tmp_path)
    m = load_corpus(task("sf-audio-snips"), tmp_path)
    # Aditi is a valid-list speaker, so her file in train/ is not used (SUPERB keeps each folder's own speakers)
    assert m.sizes() == {"train": 2, "valid": 1, "test": 1}
    assert {e.speaker for e in m.split("train")} == {"Ivy", "Joanna"}
    ex = {e.id: e for e in m}
    assert ex["Ivy-snips-train-0"].label == ("add B-artist sabrina salerno E-artist to the B-playlist grime "
                                             "instrumentals E-playlist playlist")
    assert ex["Amy-snips-valid-0"].label == "what is the weather in B-city paris E-city"  # plain (non-IOB) tags
    assert ex["Brian-snips-test-0"].label == "play B-artist beyonce E-artist now"  # accents folded
    assert ex["Brian-snips-test-0"].extra == {"intent": "PlayMusic"}


def test_snips_tag_count_mismatch_and_unknown_slot_are_named(tmp_path):
    _snips_tree(tmp_path)
    tf = tmp_path / "all.iob.snips.txt"
    lines = tf.read_text().splitlines()
    text(tf, "\n".join(lines[:1] + [lines[1].replace("B-artist I-artist", "B-artist")] + lines[2:]) + "\n")
    assert f"{tf}:2" in malformed(task("sf-audio-snips"), tmp_path)
    text(tf, "\n".join(lines[:1] + [lines[1].replace("B-playlist I-playlist", "B-song I-song")] + lines[2:]) + "\n")
    msg = malformed(task("sf-audio-snips"), tmp_path)
    assert f"{tf}:2" in msg and "slot type 'song'" in msg


# ---- Grabo (SCR) ----------------------------------------------------------------------------------------------
def test_grabo_per_speaker_per_class_split_uses_sorted_order(tmp_path):
    for spk in ("pp2", "pp3"):
        for cls, n in (("recording1", 7), ("recording12", 6)):
            for i in reversed(range(n)):  # created in reverse order: the split must not depend on it
                wav(tmp_path / "speakers" / spk / "spchdatadir" / cls / f"{i:02d}.wav")
    m = load_corpus(task("scr-grabo"), tmp_path)
    assert m.sizes() == {"train": 8, "valid": 16, "test": 2 * (1 + 0)}
    train_files = sorted(Path(e.path).name for e in m.split("train") if e.speaker == "pp2"
                         and e.label == "recording1")
    assert train_files == ["00.wav", "01.wav"]
    assert {Path(e.path).name for e in m.split("test")} == {"06.wav"}
    (tmp_path / "speakers" / "pp4").mkdir()
    assert "pp4: has no spchdatadir" in malformed(task("scr-grabo"), tmp_path)


# ---- Lithuanian and Arabic speech commands (SCR) ---------------------------------------------------------------
def _list_file(path: Path, rels: list[str]) -> None:
    text(path, "file\tlabel\n" + "".join(f"/home/someone/data/{r}\t{r.split('/')[0]}\n" for r in rels))


def test_lithuanian_lists_noise_rows_and_class_folders(tmp_path):
    lt = tmp_path / "SpeechAdvReprogram" / "Datasets" / "LT-SCR"
    train = ["ne/a1.wav", "ačiū/a2.wav", "kitas/a3.wav"]
    _list_file(lt / "train_limit20.csv", train)
    _list_file(lt / "dev_full.csv", ["stop/b1.wav"])
    _list_file(lt / "test_full.csv", ["į_viršų/c1.wav"])
    noise = [f"_background_noise_/n{i:02d}.wav" for i in range(21)]
    _list_file(lt / "noise_full.csv", noise)
    for r in train + ["stop/b1.wav", "į_viršų/c1.wav"] + noise:
        wav(tmp_path / "dataset" / r, seconds=0.02)
    m = load_corpus(task("scr-lt-speech-commands"), tmp_path)
    assert m.sizes() == {"train": 3 + 1, "valid": 1 + 10, "test": 1 + 10}
    assert m.labels("train") == {"ne": 1, "ačiū": 1, "unknown": 1, "silence": 1}
    assert {Path(e.path).name for e in m.split("test") if e.label == "silence"} == {f"n{i:02d}.wav"
                                                                                   for i in range(10)}
    text(lt / "dev_full.csv", "file\tlabel\nstop/b1.wav\tstop\nnot a path\n")
    assert f"{lt / 'dev_full.csv'}:3" in malformed(task("scr-lt-speech-commands"), tmp_path)


def test_arabic_lists_map_file_prefixes_to_16_classes(tmp_path):
    ar = tmp_path / "SpeechAdvReprogram" / "Datasets" / "AR-SCR"
    files = {"train_full.csv": ["commands/A_Add17.wav", "numbers/0_1.wav", "commands/F_Continue54.wav"],
             "dev_full.csv": ["numbers/9_28.wav"], "test_full.csv": ["commands/C_Cancel55.wav"]}
    published = {"commands": "Words", "numbers": "Numbers"}  # the database's folders (ltkbenamer/AR_Speech_Database)
    for name, rels in files.items():
        _list_file(ar / name, rels)
        for r in rels:
            folder, file = r.split("/")
            wav(tmp_path / "AR_ SpeechCommands_Database" / published[folder] / file, seconds=0.02)
    m = load_corpus(task("scr-ar-speech-commands"), tmp_path)
    assert m.labels("train") == {"add": 1, "zero": 1, "continue": 1}
    assert [e.label for e in m.split("valid")] == ["nine"] and [e.label for e in m.split("test")] == ["cancel"]
    assert m.split("valid")[0].path.endswith("AR_ SpeechCommands_Database/Numbers/9_28.wav")
    assert {e.id for e in m.split("test")} == {"commands/C_Cancel55"}
    # a copy renamed as SpeechAdvReprogram's make_data.py expects (commands/, numbers/) is found too
    db = tmp_path / "AR_ SpeechCommands_Database"
    (db / "Words").rename(db / "commands")
    assert load_corpus(task("scr-ar-speech-commands"), tmp_path).checksum() == m.checksum()
    (db / "Numbers").rename(db / "elsewhere")
    report = check_corpus(task("scr-ar-speech-commands"), tmp_path)
    assert not report.ok and any("Numbers/0_1.wav" in x for x in report.missing)
    (db / "elsewhere").rename(db / "Numbers")
    _list_file(ar / "test_full.csv", ["commands/X_s4_1.wav"])
    msg = malformed(task("scr-ar-speech-commands"), tmp_path)
    assert f"{ar / 'test_full.csv'}:2" in msg and "X_s4_1.wav" in msg


# ---- VoxForge (LID) -------------------------------------------------------------------------------------------
VOXFORGE_AUDIO = "Trunk/Audio/Main/16kHz_16bit"


def _voxforge_tree(root: Path) -> None:
    """<lang>/Trunk/Audio/Main/16kHz_16bit/<user>-<session>/wav/*.wav: 2 languages × 5 users × 2 sessions × 2."""
    base = VOXFORGE_AUDIO
    for lang in ("de", "fr"):
        for user in ("anna", "bert", "carl", "dora", "anonymous"):
            for session in ("20080101-aaa", "20090101-bbb"):
                for k in range(2):
                    wav(root / lang / base / f"{user}-{session}" / "wav" / f"{k}.wav", seconds=0.02)


def test_voxforge_speaker_disjoint_seeded_split_with_exact_sizes(tmp_path):
    _voxforge_tree(tmp_path)
    spec = task("lid-voxforge", languages=["de", "fr"], sizes=[4, 2, 2])
    m = load_corpus(spec, tmp_path)
    assert m.sizes() == {"train": 8, "valid": 4, "test": 4}
    assert all(n == 4 for n in m.labels("train").values())
    seen: dict[str, str] = {}
    for e in m:
        assert seen.setdefault(e.speaker, e.split) == e.split, "a speaker straddles two splits"
    assert check_corpus(spec, tmp_path).speaker_disjoint is True
    assert load_corpus(spec, tmp_path).checksum() == m.checksum()
    msg = malformed(task("lid-voxforge", languages=["de", "fr"], sizes=[40, 2, 2]), tmp_path)
    assert str(tmp_path / "de" / VOXFORGE_AUDIO) in msg and "fewer than the 44" in msg


# ---- ASVspoof 2019 LA (FSD) -----------------------------------------------------------------------------------
def test_asvspoof_protocols_give_official_partitions_and_keys(tmp_path):
    la = tmp_path / "LA"
    for part, suffix, letter in (("train", "train.trn", "T"), ("dev", "dev.trl", "D"), ("eval", "eval.trl", "E")):
        lines = []
        for i, (system, key) in enumerate((("-", "bonafide"), ("A01", "spoof"), ("A02", "spoof"))):
            utt = f"LA_{letter}_{i:07d}"
            wav(la / f"ASVspoof2019_LA_{part}" / "flac" / f"{utt}.flac", flac=True)
            lines.append(f"LA_00{letter}{i % 2} {utt} - {system} {key}\n")
        text(la / "ASVspoof2019_LA_cm_protocols" / f"ASVspoof2019.LA.cm.{suffix}.txt", "".join(lines))
    spec = task("fsd-asvspoof2019-la")
    m = load_corpus(spec, tmp_path)
    assert m.sizes() == {"train": 3, "valid": 3, "test": 3}
    assert m.labels("test") == {"bonafide": 1, "spoof": 2} and spec.positive_label == "bonafide"
    assert {e.extra["system"] for e in m.split("train")} == {"-", "A01", "A02"}
    proto = la / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.dev.trl.txt"
    text(proto, "LA_0001 LA_D_0000000 - - fake\n")
    assert f"{proto}:1" in malformed(spec, tmp_path)


# ---- IEMOCAP (ER) ---------------------------------------------------------------------------------------------
def _iemocap_tree(root: Path) -> None:
    emotions = ["neu", "hap", "exc", "ang", "sad", "fru", "neu", "sad", "ang", "hap"]
    for k in range(1, 6):
        dialog = f"Ses0{k}F_impro01"
        lines = ["% header\n", "\n"]
        for i, emo in enumerate(emotions):
            utt = f"{dialog}_{'FM'[i % 2]}{i:03d}"
            wav(root / f"Session{k}" / "sentences" / "wav" / dialog / f"{utt}.wav", seconds=0.02)
            lines.append(f"[{i}.0 - {i}.5]\t{utt}\t{emo}\t[2.5000, 2.5000, 2.5000]\n")
            lines.append(f"C-E1:\t{emo};\t()\n")
        text(root / f"Session{k}" / "dialog" / "EmoEvaluation" / f"{dialog}.txt", "".join(lines))


def test_iemocap_leave_one_session_out_with_exc_merged(tmp_path):
    _iemocap_tree(tmp_path)
    m = load_corpus(task("er-iemocap"), tmp_path)
    assert m.sizes()["test"] == 9 and {e.id[:5] for e in m.split("test")} == {"Ses01"}
    assert m.labels() == {"neu": 10, "hap": 15, "ang": 10, "sad": 10}  # exc → hap, fru dropped
    assert m.sizes()["valid"] == round(0.2 * 36) and "Ses02F" in {e.speaker for e in m.split("train")}
    m2 = load_corpus(task("er-iemocap", test_fold="Session3"), tmp_path)
    assert {e.id[:5] for e in m2.split("test")} == {"Ses03"}
    ev = tmp_path / "Session2" / "dialog" / "EmoEvaluation" / "Ses02F_impro01.txt"
    text(ev, "[1.0 - 2.0]\tSes02F_impro01_F000\n")
    assert f"{ev}:1" in malformed(task("er-iemocap"), tmp_path)


# ---- AccentDB extended (AcC) ----------------------------------------------------------------------------------
def test_accentdb_seeded_80_20_then_80_20_per_accent(tmp_path):
    for accent in ("american", "welsh"):
        for spk in ("speaker_01", "speaker_02"):
            for i in range(5):
                wav(tmp_path / "data" / accent / spk / f"{accent}_{spk}_{i:03d}.wav", seconds=0.02)
    m = load_corpus(task("acc-accentdb"), tmp_path)
    assert m.sizes() == {"train": 2 * 6, "valid": 2 * 2, "test": 2 * 2}
    assert m.labels("test") == {"american": 2, "welsh": 2}
    assert load_corpus(task("acc-accentdb", seed=3), tmp_path).checksum() != m.checksum()
    wav(tmp_path / "data" / "martian" / "s" / "x.wav", seconds=0.02)
    assert "martian" in malformed(task("acc-accentdb"), tmp_path)


# ---- MUStARD and MUStARD++ (SD) -------------------------------------------------------------------------------
def test_mustard_friends_is_test_and_valid_is_stratified(tmp_path):
    data = {}
    for i in range(24):
        uid = f"{i}_{100 + i}"
        show = "FRIENDS" if i < 4 else "BBT"
        data[uid] = {"utterance": "oh really", "speaker": f"S{i % 3}", "context": [], "context_speakers": [],
                     "show": show, "sarcasm": bool(i % 2)}
        wav(tmp_path / "utterances_final_wav" / f"{uid}.wav", seconds=0.02)
    text(tmp_path / "sarcasm_data.json", json.dumps(data))
    spec = task("sd-mustard")
    m = load_corpus(spec, tmp_path)
    assert m.sizes() == {"train": 18, "valid": 2, "test": 4}
    assert m.labels("valid") == {"sarcastic": 1, "not_sarcastic": 1} and spec.main_metric == "binary_f1"
    data["0_100"]["sarcasm"] = "maybe"
    text(tmp_path / "sarcasm_data.json", json.dumps(data))
    msg = malformed(spec, tmp_path)
    assert "sarcasm_data.json" in msg and "'0_100'" in msg


def test_mustardpp_skips_context_rows_and_splits_80_10_10(tmp_path):
    lines = ["SCENE,KEY,SENTENCE,SPEAKER,SHOW,Sarcasm\n"]
    for i in range(20):
        lines.append(f"{i},{i}_c_00,context,A,BBT,\n")
        lines.append(f'{i},{i}_u,"yeah, right",B,BBT,{i % 2}.0\n')
        wav(tmp_path / "final_utterance_wav" / f"{i}_u.wav", seconds=0.02)
    text(tmp_path / "mustard++_text.csv", "".join(lines))
    m = load_corpus(task("sd-mustardpp"), tmp_path)
    assert m.sizes() == {"train": 16, "valid": 2, "test": 2}
    assert m.labels("test") == {"sarcastic": 1, "not_sarcastic": 1}
    text(tmp_path / "mustard++_text.csv", "SCENE,KEY,SENTENCE\n1,1_u,x\n")
    assert "mustard++_text.csv: header lacks column(s) ['Sarcasm']" in malformed(task("sd-mustardpp"), tmp_path)


# ---- VoxCeleb1 gender (GID) -----------------------------------------------------------------------------------
def test_voxceleb1_gender_from_meta_and_iden_split(tmp_path):
    text(tmp_path / "vox1_meta.csv", "VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n"
         "id10001\tA.J._Buckley\tm\tIreland\tdev\nid10002\tAaron_Tveit\tf\tUSA\tdev\n"
         "id10270\tZ\tf\tUSA\ttest\n")
    lines = []
    for spk, where in (("id10001", "vox1_dev_wav"), ("id10002", "vox1_dev_wav"), ("id10270", "vox1_test_wav")):
        for code in "123":
            rel = f"{spk}/vid{code}/0000{code}.wav"
            wav(tmp_path / where / "wav" / rel, seconds=0.02)
            lines.append(f"{code} {rel}\n")
    text(tmp_path / "iden_split.txt", "".join(lines))
    spec = task("gid-voxceleb1")
    m = load_corpus(spec, tmp_path)
    assert m.sizes() == {"train": 3, "valid": 3, "test": 3}
    assert m.labels("test") == {"male": 1, "female": 2}
    assert "vox1_test_wav" in {e.id: e for e in m}["id10270/vid3/00003"].path
    assert check_corpus(spec, tmp_path).speaker_disjoint is False  # the iden split holds out videos, not speakers
    text(tmp_path / "iden_split.txt", "".join(lines) + "4 id10001/vid9/00009.wav\n")
    assert f"{tmp_path / 'iden_split.txt'}:10" in malformed(spec, tmp_path)


# ---- ESC-50 (AuC) ---------------------------------------------------------------------------------------------
def test_esc50_fold1_test_and_grouped_80_20(tmp_path):
    spec = task("auc-esc50")
    lines = _esc50_tree(tmp_path, spec.labels)
    m = load_corpus(spec, tmp_path)
    assert m.sizes() == {"train": 12, "valid": 4, "test": 4}
    assert {e.extra["fold"] for e in m.split("test")} == {1}
    assert check_corpus(spec, tmp_path).speaker_disjoint is True  # clips of one recording stay together
    text(tmp_path / "meta" / "esc50.csv", lines[0] + "1-1-A-0.wav,1,5,dog,False,1,A\n")
    msg = malformed(spec, tmp_path)
    assert "esc50.csv:2" in msg and "target 5" in msg


# ---- VoxCeleb1 speaker identification (SID) -------------------------------------------------------------------
def test_voxceleb1_speaker_ids_are_the_1251_labels_on_the_iden_split(tmp_path):
    lines = []
    for spk, where in (("id10001", "dev"), ("id11251", "dev"), ("id10270", "test")):  # s3prl's dev/wav, test/wav
        for code in "123":
            rel = f"{spk}/vid{code}/0000{code}.wav"
            wav(tmp_path / where / "wav" / rel, seconds=0.02)
            lines.append(f"{code} {rel}\n")
    text(tmp_path / "iden_split.txt", "".join(lines))
    spec = task("sid-voxceleb1")
    assert len(spec.labels) == 1251 and spec.labels[0] == "id10001" and spec.labels[-1] == "id11251"
    m = load_corpus(spec, tmp_path)  # no vox1_meta.csv needed
    assert m.sizes() == {"train": 3, "valid": 3, "test": 3}
    assert m.labels("test") == {"id10001": 1, "id11251": 1, "id10270": 1}
    assert all(e.label == e.speaker == e.id.split("/")[0] for e in m)
    assert "/test/wav/id10270/" in {e.id: e for e in m}["id10270/vid1/00001"].path
    text(tmp_path / "iden_split.txt", "".join(lines) + "1 id20001/v/00001.wav\n")
    msg = malformed(spec, tmp_path)
    assert f"{tmp_path / 'iden_split.txt'}:10" in msg and "id20001" in msg


# ---- Speech Commands v2 + Freesound (VAD) ---------------------------------------------------------------------
def _vad_tree(root: Path) -> dict[str, list[dict]]:
    """NeMo's balanced manifests: relative speech paths, absolute background paths (both occur in practice)."""
    speech = root / "google_dataset_v2" / "google_speech_recognition_v2"
    noise = root / "freesound_resampled_background"
    for word, spk in (("yes", "0a7c2a8d"), ("no", "1b4c9b89"), ("off", "2c5d0e13")):
        wav(speech / word / f"{spk}_nohash_0.wav", seconds=1.0)
    for cat in ("rain", "traffic"):
        wav(noise / cat / f"{cat}_001.wav", seconds=3.0)
    rows = {
        "speech_training": [("google_dataset_v2/google_speech_recognition_v2/yes/0a7c2a8d_nohash_0.wav", 0.2),
                            ("./google_dataset_v2/google_speech_recognition_v2/no/1b4c9b89_nohash_0.wav", 0.2)],
        "speech_validation": [("google_dataset_v2/google_speech_recognition_v2/off/2c5d0e13_nohash_0.wav", 0.2)],
        "speech_testing": [("google_dataset_v2/google_speech_recognition_v2/off/2c5d0e13_nohash_0.wav", 0.2),
                           ("google_dataset_v2/google_speech_recognition_v2/off/2c5d0e13_nohash_0.wav", 0.21)],
        "background_training": [(str(noise / "rain" / "rain_001.wav"), 0.0), (str(noise / "rain" / "rain_001.wav"),
                                                                              0.15),
                                (str(noise / "rain" / "rain_001.wav"), 0.15)],  # drawn twice by the rebalancing
        "background_validation": [(str(noise / "traffic" / "traffic_001.wav"), 0.3)],
        "background_testing": [(str(noise / "traffic" / "traffic_001.wav"), 1.0)],
    }
    out = {}
    for name, items in rows.items():
        label = name.split("_")[0]
        out[name] = [{"audio_filepath": p, "duration": 0.63, "label": label, "text": "_", "offset": o}
                     for p, o in items]
        text(root / "manifest" / f"balanced_{name}_manifest.json", "".join(json.dumps(r) + "\n" for r in out[name]))
    return out


def test_vad_reads_nemo_balanced_manifests_as_segments_with_offsets(tmp_path):
    _vad_tree(tmp_path)
    spec = task("vad-freesound")
    m = load_corpus(spec, tmp_path)
    assert m.sizes() == {"train": 2 + 3, "valid": 1 + 1, "test": 2 + 1}
    assert m.labels("train") == {"speech": 2, "background": 3}
    ex = {e.id: e for e in m}
    yes = ex["train/speech/yes/0a7c2a8d_nohash_0@0.200"]
    assert (yes.start, yes.end, yes.speaker) == (0.2, 0.2 + 0.63, "0a7c2a8d")
    assert Path(yes.path) == tmp_path / "google_dataset_v2/google_speech_recognition_v2/yes/0a7c2a8d_nohash_0.wav"
    # a segment drawn twice stays twice (NeMo's rebalancing samples with replacement), under distinct ids
    rain = [e for e in m.split("train") if e.label == "background"]
    assert sorted(e.id for e in rain) == [f"train/background/rain/rain_001@{x}" for x in ("0.000", "0.150", "0.150~2")]
    assert [e.start for e in m.split("test") if e.label == "speech"] == [0.2, 0.21]
    # the class comes from the manifest, not the folder name (v2's path rule would call all of these speech)
    assert all("freesound_resampled_background" in e.path for e in m if e.label == "background")
    report = check_corpus(spec, tmp_path)
    assert report.ok and report.speaker_disjoint is False  # NeMo splits files: the 'off' speaker straddles


def test_vad_bad_label_offset_and_missing_manifest_are_named(tmp_path):
    rows = _vad_tree(tmp_path)
    spec = task("vad-freesound")
    path = tmp_path / "manifest" / "balanced_speech_validation_manifest.json"
    text(path, json.dumps({**rows["speech_validation"][0], "label": "background"}) + "\n")
    assert f"{path}:1" in malformed(spec, tmp_path) and "in the speech manifest" in malformed(spec, tmp_path)
    text(path, json.dumps({**rows["speech_validation"][0], "offset": "0.2"}) + "\n")
    assert f"{path}:1: 'offset' must be a non-negative number" in malformed(spec, tmp_path)
    path.unlink()
    msg = malformed(spec, tmp_path)
    assert f"missing: {path}" in msg and "process_vad_data.py" in msg


# ---- Dysarthric Mandarin speech commands (SCR) ----------------------------------------------------------------
def _dm_list(path: Path, rows: list[tuple[str, str]]) -> None:
    text(path, "filename\tlabel\n" + "".join(f"/work/someone/dysarthria_zh_command/{r}\t{c}\n" for r, c in rows))


def test_dysarthric_mandarin_v2_sklearn_split_and_six_dropped_classes(tmp_path):
    from sklearn.model_selection import train_test_split

    dm = tmp_path / "SpeechAdvReprogram" / "Datasets" / "DM-SCR"
    train_rows, test_rows = [], []
    for spk in ("D_SPK1", "D_SPK2"):
        for code in ("01", "10", "12", "19"):
            for k in range(1, 6):
                rel = f"{spk}/{code}/{spk}_c{int(code)} ({k}).wav"
                wav(tmp_path / "dysarthria_zh_command" / rel, seconds=0.02)
                (test_rows if k == 5 else train_rows).append((rel, code))
    _dm_list(dm / "train_full.csv", train_rows)
    _dm_list(dm / "test_full.csv", test_rows)
    m = load_corpus(task("scr-dm-speech-commands"), tmp_path)
    # v2: train_test_split(df, test_size=0.2, random_state=1) over the rows in file order, then codes 10, 19 dropped
    kept = {i for i, (_, c) in enumerate(train_rows) if c not in ("10", "19")}
    tr, dv = train_test_split(list(range(len(train_rows))), test_size=0.2, random_state=1)
    assert {e.id for e in m.split("valid")} == {train_rows[i][0][:-4] for i in dv if i in kept}
    assert {e.id for e in m.split("train")} == {train_rows[i][0][:-4] for i in tr if i in kept}
    assert m.sizes()["test"] == 4 and m.labels("test") == {"one": 2, "down": 2}
    assert m.labels() == {"one": 10, "down": 10} and {e.speaker for e in m} == {"D_SPK1", "D_SPK2"}
    e = m.split("test")[0]
    assert Path(e.path).parent == tmp_path / "dysarthria_zh_command" / e.speaker / e.id.split("/")[1]
    text(dm / "test_full.csv", "filename\tlabel\nD_SPK1/01/x.wav\t01\nx.wav\t01\n")
    msg = malformed(task("scr-dm-speech-commands"), tmp_path)
    assert f"{dm / 'test_full.csv'}:3" in msg and "lacks <speaker>/<code>/" in msg


# ---- EasyCall (DYC) -------------------------------------------------------------------------------------------
def test_easycall_tom_classes_short_files_dropped_and_v2_split_sizes(tmp_path):
    speakers = {"fc01": "control", "mc02": "control", "f01": "tom1", "f02": "tom3", "f11": "tom2", "m05": "tom4",
                "m11": "tom5", "f04": None}  # f04: dysarthric but absent from v2's TOM table
    for spk in speakers:
        for k in range(3):
            wav(tmp_path / spk / "Sessione_1" / f"{spk}_{k}.wav", seconds=0.1)
        wav(tmp_path / spk / "Sessione_1" / f"{spk}_short.wav", seconds=0.05)  # 800 samples < 1,000: dropped
    text(tmp_path / "README.txt", "not a speaker\n")
    spec = task("dyc-easycall")
    m = load_corpus(spec, tmp_path)
    n = 7 * 3
    assert m.sizes() == {"train": n - 2 * (n // 10), "valid": n // 10, "test": n // 10}
    assert m.labels() == {"control": 6, "tom1": 3, "tom3": 3, "tom2": 3, "tom4": 3, "tom5": 3}
    assert not any("short" in e.id or e.speaker == "f04" for e in m)
    assert {e.id: e.label for e in m}["m11/Sessione_1/m11_0"] == "tom5"
    assert load_corpus(spec, tmp_path).checksum() == m.checksum()
    assert load_corpus(task("dyc-easycall", seed=1), tmp_path).checksum() != m.checksum()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no speaker folder" in malformed(spec, empty)


def test_bench_data_check_reports_the_vad_segments_ready(tmp_path):
    import os
    import subprocess
    import sys

    _vad_tree(tmp_path)
    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "bench.cli", "data", "check", "vad-freesound", "--root", str(tmp_path)],
                         capture_output=True, text=True, env=env, cwd=TASKS.parent.parent, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ready" in out.stdout and "examples: train 5, valid 2, test 3; 2 distinct labels" in out.stdout
