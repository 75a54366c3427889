"""Mini corpora in the official layouts, a few short tones each: what the corpus adapters' tests read and what
``benchmarks/rehearsal_published.py`` runs the published recipes on (one source of the layouts for both).

Each builder writes a tree a real download would have, at a handful of files: Speech Commands v0.01
(:func:`speech_commands_v1_tree`), Fluent Speech Commands (:func:`fluent_commands_tree`) and ESC-50
(:func:`esc50_tree`). The audio is a deterministic 440 Hz tone (:func:`tone_wav`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data.audio import write_audio


def tone_wav(path: Path, seconds: float = 0.05, flac: bool = False) -> Path:
    """A short deterministic tone (WAV via bench.data.audio, FLAC via soundfile)."""
    n = max(1, int(seconds * 16000))
    x = (0.1 * np.sin(2 * np.pi * 440 * np.arange(n) / 16000)).astype(np.float32)
    if flac:
        import soundfile as sf

        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), x, 16000, format="FLAC")
    else:
        write_audio(path, x)
    return path


def write_text(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path


# ---- Speech Commands v0.01 (KS) -------------------------------------------------------------------------------
def hash_split_speakers(kind: str | None, n: int) -> list[str]:
    """The first ``n`` speaker ids (8 hex digits) that Speech Commands' hash split puts in ``kind`` (train, valid,
    or None: the test share, which the v0.01 adapter drops from the training folder)."""
    from bench.data.corpora.speech_commands_v1 import hash_split

    out, i = [], 0
    while len(out) < n:
        name = f"{i:08x}"
        if hash_split(f"{name}_nohash_0.wav") == kind:
            out.append(name)
        i += 1
    return out


def speech_commands_v1_tree(root: Path) -> None:
    """``speech_commands_v0.01/<word>/<spk>_nohash_0.wav`` (the 10 keywords and ``bed``; 2 train, 1 valid and one
    hash-test speaker each), ``_background_noise_`` (two 12 s files) and ``speech_commands_test_set_v0.01``."""
    from bench.data.corpora.speech_commands_v1 import KEYWORDS

    train_spk, valid_spk, dropped = (hash_split_speakers("train", 2), hash_split_speakers("valid", 1),
                                     hash_split_speakers(None, 1))
    tr = root / "speech_commands_v0.01"
    for word in (*KEYWORDS, "bed"):
        for s in train_spk:
            tone_wav(tr / word / f"{s}_nohash_0.wav")
        tone_wav(tr / word / f"{valid_spk[0]}_nohash_0.wav")
        tone_wav(tr / word / f"{dropped[0]}_nohash_0.wav")
    for name in ("white_noise", "running_tap"):
        tone_wav(tr / "_background_noise_" / f"{name}.wav", seconds=12.0)
    write_text(tr / "validation_list.txt", "yes/x.wav\n")  # files beside the class folders are ignored
    te = root / "speech_commands_test_set_v0.01"
    for cls in ("yes", "no", "_silence_", "_unknown_"):
        tone_wav(te / cls / f"abcdef01_nohash_{cls}.wav")


# ---- Fluent Speech Commands (IC) ------------------------------------------------------------------------------
FSC_HEADER = ",path,speakerId,transcription,action,object,location\n"


def fluent_commands_tree(root: Path) -> None:
    """``data/{train,valid,test}_data.csv`` and ``wavs/speakers/<spk>/``: 3 / 1 / 1 utterances."""
    rows = {"train": [("spkA", "Turn on the lights", "activate", "lights", "none"),
                      ("spkA", "Switch language", "change language", "none", "none"),
                      ("spkB", "Heat up the kitchen", "increase", "heat", "kitchen")],
            "valid": [("spkC", "Bring me my socks", "bring", "socks", "none")],
            "test": [("spkD", "Decrease the volume", "decrease", "volume", "none")]}
    for split, items in rows.items():
        lines = [FSC_HEADER]
        for i, (spk, tr, a, o, loc) in enumerate(items):
            rel = f"wavs/speakers/{spk}/{split}-{i}.wav"
            tone_wav(root / rel)
            lines.append(f'{i},{rel},{spk},"{tr}",{a},{o},{loc}\n')
        write_text(root / "data" / f"{split}_data.csv", "".join(lines))


# ---- ESC-50 (AuC) ---------------------------------------------------------------------------------------------
def esc50_tree(root: Path, labels, seconds: float = 0.02) -> list[str]:
    """meta/esc50.csv + audio/ (ESC-50-master's layout): 5 folds × 2 classes × 2 takes; returns the csv lines."""
    lines = ["filename,fold,target,category,esc10,src_file,take\n"]
    for fold in range(1, 6):
        for target in (0, 1):
            for take in "AB":
                src = 1000 * fold + target
                name = f"{fold}-{src}-{take}-{target}.wav"
                lines.append(f"{name},{fold},{target},{labels[target]},False,{src},{take}\n")
                tone_wav(root / "audio" / name, seconds=seconds)
    write_text(root / "meta" / "esc50.csv", "".join(lines))
    return lines


__all__ = ["tone_wav", "write_text", "hash_split_speakers", "speech_commands_v1_tree", "FSC_HEADER",
           "fluent_commands_tree", "esc50_tree"]
