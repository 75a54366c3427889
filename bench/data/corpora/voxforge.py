"""VoxForge language identification (6 languages): SpeechPrompt v2 LID row 7.

Layout under the root (the ``downloads/`` folder of the TFDS URL list, each speaker archive extracted in place):
``<lang>/Trunk/Audio/Main/16kHz_16bit/<user>-<date>-<code>/wav/*.wav`` for de, en, es, fr, it, ru.

Split: SpeechPrompt v2 gathered speaker folders in filesystem order until a language had > 1,800 files, then
shuffled FILES (seed 1) into 1,200 / 300 / 300, so the same speaker could be in train and test. Here, per language,
speakers (the user name of the session folder; every ``anonymous`` session counts as its own speaker) are ordered
by a seeded permutation of their sorted names and assigned whole to test until it holds 300 files, then valid
(300), then train (1,200); each split then keeps a seeded sample of exactly that many files. Deterministic,
speaker-disjoint, the same 10,800 utterances in total.
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
    defaults = {"languages": ["de", "en", "es", "fr", "it", "ru"], "sizes": [1200, 300, 300], "seed": 1}

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
