"""VoxCeleb1 gender identification: SpeechPrompt v2 GID row 14 (no preprocessing code was released for it).

Layout under the root: ``vox1_meta.csv`` (tab-separated: ``VoxCeleb1 ID, VGGFace1 ID, Gender, Nationality, Set``),
``iden_split.txt`` (``<1|2|3> <id>/<video>/<n>.wav``: the official identification split SUPERB SID uses) and the
audio in one of ``wav/``, ``vox1_dev_wav/wav/`` + ``vox1_test_wav/wav/`` or s3prl's ``dev/wav/`` + ``test/wav/``
(``<id>/<video>/<n>.wav``; each speaker folder is looked up once). Label = the Gender column (m → male,
f → female); split = the iden split (1 train, 2 valid, 3 test), which holds out videos, not speakers: all
1,251 speakers appear in every split, so a model can pass by recognising speakers. The card says so.
"""

from __future__ import annotations

from bench.data.corpora.base import CorpusAdapter, MalformedCorpusError, read_lines, read_table
from bench.data.manifest import Example

SPLIT_CODES = {"1": "train", "2": "valid", "3": "test"}
GENDERS = {"m": "male", "f": "female"}


class Adapter(CorpusAdapter):
    title = "VoxCeleb1 gender (iden split)"
    obtain = ("VoxCeleb1 from https://www.robots.ox.ac.uk/~vgg/data/voxceleb/vox1.html (CC BY-SA 4.0; audio by "
              "request form), with vox1_meta.csv and iden_split.txt from the same page.")
    defaults = {"meta": "vox1_meta.csv", "split_file": "iden_split.txt",
                "wav_dirs": ["wav", "vox1_dev_wav/wav", "vox1_test_wav/wav", "dev/wav", "test/wav"]}

    def required(self) -> list[str]:
        return [self.params["meta"], self.params["split_file"]]

    def examples(self) -> list[Example]:
        meta = self.path(self.params["meta"])
        gender = {}
        for n, row in read_table(meta, ("VoxCeleb1 ID", "Gender"), delimiter="\t"):
            g = row["Gender"].lower()
            if g not in GENDERS:
                raise MalformedCorpusError(f"{meta}:{n}: Gender must be m or f, got {row['Gender']!r}")
            gender[row["VoxCeleb1 ID"]] = GENDERS[g]
        return self.iden_split_examples(gender, str(meta))

    def iden_split_examples(self, label_of: dict[str, str], label_source: str) -> list[Example]:
        """One example per ``iden_split.txt`` line, labelled ``label_of[speaker]`` (``label_source`` names where
        those labels come from in error messages)."""
        roots = [self.path(d) for d in self.params["wav_dirs"] if self.path(d).is_dir()]
        if not roots:
            raise MalformedCorpusError(f"{self.root}: none of the audio folders {self.params['wav_dirs']} exists")
        speaker_dir: dict[str, object] = {}
        split_file = self.path(self.params["split_file"])
        out = []
        for n, line in read_lines(split_file):
            fields = line.split()
            if len(fields) != 2 or fields[0] not in SPLIT_CODES or fields[1].count("/") != 2:
                raise MalformedCorpusError(f"{split_file}:{n}: expected '<1|2|3> <id>/<video>/<n>.wav', "
                                           f"got {line[:80]!r}")
            rel = fields[1]
            spk = rel.split("/")[0]
            if spk not in label_of:
                raise MalformedCorpusError(f"{split_file}:{n}: speaker {spk} is not in {label_source}")
            if spk not in speaker_dir:
                speaker_dir[spk] = next((r for r in roots if (r / spk).is_dir()), roots[0])
            label = self.check_label(label_of[spk], f"{label_source}: {spk}")
            out.append(self.example(rel.rsplit(".", 1)[0], speaker_dir[spk] / rel, label, SPLIT_CODES[fields[0]],
                                    spk))
        return out
