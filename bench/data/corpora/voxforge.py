"""VoxForge language identification (6 languages): SpeechPrompt v2 LID row 7.

Layout under the root (the ``downloads/`` folder of the TFDS URL list, each speaker archive extracted in place):
``<lang>/Trunk/Audio/Main/16kHz_16bit/<user>-<date>-<code>/wav/*.wav`` for de, en, es, fr, it, ru.

Split: SpeechPrompt v2 gathered speaker folders in filesystem order until a language had > 1,800 files, then
shuffled FILES (seed 1) into 1,200 / 300 / 300, so the same speaker could be in train and test. Here, per language,
speakers (the user name of the session folder; every ``anonymous`` session counts as its own speaker) are ordered
by a seeded permutation of their sorted names and assigned whole to test until it holds 300 files, then valid
(300), then train (1,200); each split then keeps a seeded sample of exactly that many files. Deterministic,
speaker-disjoint, the same 10,800 utterances in total.

``split: v2`` (the ``speechprompt-v2`` recipe) runs the released split instead (SpeechPrompt-v2
GSLM/preprocess/LID_voxforge/dataset.py:54-73): per language, session folders' wav files are gathered until
there are more than 1,800 (train + valid + test sizes), then ``random.seed(1); random.shuffle`` and the first
1,200 / next 300 / next 300 files; speakers are shared between splits. The released code walks folders in
filesystem order (``iterdir``, ``glob``), which no one can reproduce; here they are walked in sorted order.
"""

from __future__ import annotations

from collections import defaultdict

from bench.data.corpora.base import CorpusAdapter, MalformedCorpusError, as_relative_id, sorted_files, stable_rng
from bench.data.manifest import Example

AUDIO_SUBDIR = "Trunk/Audio/Main/16kHz_16bit"


def speaker_of(session: str) -> str:
    user = session.split("-")[0]
    return session if not user or user.lower() == "anonymous" else user


class Adapter(CorpusAdapter):
    title = "VoxForge LID (speaker-disjoint, seeded 1200/300/300 per language)"
    obtain = ("VoxForge (http://www.voxforge.org, GPL): download the per-speaker archives listed in TFDS's "
              "voxforge_urls.txt (wget -i voxforge_urls.txt -x) and extract each in place; the root is the "
              "downloads/ folder holding de/ en/ es/ fr/ it/ ru/.")
    defaults = {"languages": ["de", "en", "es", "fr", "it", "ru"], "sizes": [1200, 300, 300], "seed": 1,
                "split": "bench"}

    def required(self) -> list[str]:
        return [f"{lang}/{AUDIO_SUBDIR}" for lang in self.params["languages"]]

    def examples(self) -> list[Example]:
        n_train, n_valid, n_test = (int(v) for v in self.params["sizes"])
        seed = int(self.params["seed"])
        out = []
        for lang in self.params["languages"]:
            base = self.path(lang, AUDIO_SUBDIR)
            files: dict[str, list] = defaultdict(list)
            for session in sorted(d for d in base.iterdir() if d.is_dir()):
                files[speaker_of(session.name)] += sorted_files(session / "wav")
            total = sum(len(v) for v in files.values())
            need = n_train + n_valid + n_test
            if self.params["split"] == "v2":
                out += self._v2_split(lang, base, (n_train, n_valid, n_test), seed)
                continue
            if self.params["split"] != "bench":
                raise MalformedCorpusError(f"data.params split must be 'bench' or 'v2', got {self.params['split']!r}")
            if total < need:
                raise MalformedCorpusError(f"{base}: {total} wav files under */wav/, fewer than the {need} the split "
                                           f"needs ({n_train}/{n_valid}/{n_test})")
            order = sorted(files)
            perm = stable_rng(seed, "voxforge", lang).permutation(len(order))
            chosen: dict[str, list] = {"test": [], "valid": [], "train": []}
            quota = {"test": n_test, "valid": n_valid, "train": n_train}
            splits = iter(("test", "valid", "train"))
            split = next(splits)
            for i in perm:
                while split is not None and len(chosen[split]) >= quota[split]:
                    split = next(splits, None)
                if split is None:
                    break
                chosen[split] += [(order[i], f) for f in files[order[i]]]
            for split, items in chosen.items():
                if len(items) < quota[split]:
                    raise MalformedCorpusError(f"{base}: only {len(items)} files left for {split} after assigning "
                                               f"whole speakers; need {quota[split]}")
                keep = stable_rng(seed, "voxforge-files", lang, split).permutation(len(items))[:quota[split]]
                for k in sorted(keep):
                    spk, wav = items[k]
                    label = self.check_label(lang, f"{base}")
                    out.append(self.example(as_relative_id(wav, self.root), wav, label, split, f"{lang}/{spk}"))
        return out

    def _v2_split(self, lang: str, base, sizes: tuple[int, int, int], seed: int) -> list[Example]:
        """dataset.py:56-71: gather sessions (sorted) until more than sum(sizes) files, shuffle with
        ``random.seed(seed)`` (1), slice train / valid / test."""
        import random

        audios: list = []
        for session in sorted(d for d in base.iterdir() if d.is_dir()):
            audios += sorted_files(session / "wav")
            if len(audios) > sum(sizes):
                break
        if len(audios) < sum(sizes):
            raise MalformedCorpusError(f"{base}: {len(audios)} wav files under */wav/, fewer than the {sum(sizes)} "
                                       f"the split needs ({sizes[0]}/{sizes[1]}/{sizes[2]})")
        random.Random(seed).shuffle(audios)
        bounds = {"train": (0, sizes[0]), "valid": (sizes[0], sizes[0] + sizes[1]),
                  "test": (sizes[0] + sizes[1], sum(sizes))}
        label = self.check_label(lang, f"{base}")
        return [self.example(as_relative_id(wav, self.root), wav, label, split,
                             f"{lang}/{speaker_of(wav.parent.parent.name)}")
                for split, (a, b) in bounds.items() for wav in audios[a:b]]
