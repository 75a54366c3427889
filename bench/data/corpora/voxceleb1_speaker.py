"""VoxCeleb1 speaker identification (1,251 classes): SUPERB SID and the SpeechPrompt v2 website's SID row 15.

Layout under the root: ``iden_split.txt`` (``<1|2|3> <id>/<video>/<n>.wav``, the official identification split)
and the audio in one of ``wav/``, ``vox1_dev_wav/wav/`` + ``vox1_test_wav/wav/`` or s3prl's ``dev/wav/`` +
``test/wav/`` (the layout SpeechPrompt v2's ``docs/dataset.md:78-102`` sets up), read as the gender adapter reads
them (:mod:`bench.data.corpora.voxceleb1_gender`). Label = the speaker id (the path's first component); split =
the iden split (1 train, 2 valid, 3 test), which holds out videos: every speaker is in every split, as it must
be for closed-set identification. v2 released no preprocessing for SID; this is SUPERB's split
(s3prl ``downstream/voxceleb1/dataset.py``).
"""

from __future__ import annotations

from bench.data.corpora import voxceleb1_gender
from bench.data.manifest import Example


class Adapter(voxceleb1_gender.Adapter):
    title = "VoxCeleb1 speaker identification (iden split, 1,251 speakers)"
    obtain = ("VoxCeleb1 from https://www.robots.ox.ac.uk/~vgg/data/voxceleb/vox1.html (CC BY-SA 4.0; audio by "
              "request form), with iden_split.txt from the same page.")
    defaults = {"split_file": "iden_split.txt",
                "wav_dirs": ["wav", "vox1_dev_wav/wav", "vox1_test_wav/wav", "dev/wav", "test/wav"]}

    def required(self) -> list[str]:
        return [self.params["split_file"]]

    def examples(self) -> list[Example]:
        labels = self.spec.labels or []
        return self.iden_split_examples({s: s for s in labels}, f"the task's {len(labels):,} speaker labels")
