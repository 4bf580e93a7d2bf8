"""Fixed-length audio chunks for codec training, as ESPnet2's chunk iterator gives them.

A codec's decoder returns ``hop * frames`` samples, so a padded batch of whole utterances does
not line up with its input; ESPnet2's codec recipes train on fixed-size chunks
(``iterator_type: chunk``). This preprocessor gives each item one chunk instead: a random
``chunk_length`` window in training (shorter audio is padded), and in evaluation the whole
utterance padded to a multiple of ``hop_length``, so validation and inference see every sample.
"""

from __future__ import annotations

import numpy as np

from espnet3.utils.espnet2_imports import import_espnet2

AbsPreprocessor = import_espnet2("espnet2.train.preprocessor").AbsPreprocessor


class AudioChunks(AbsPreprocessor):
    """``preprocessor: {_target_: espnet3.systems.codec.preprocess.AudioChunks, chunk_length: 8000, hop_length: 320}``."""

    def __init__(self, train: bool, chunk_length: int, hop_length: int, name: str = "audio", seed: int = 0):
        super().__init__(train)
        if chunk_length % hop_length:
            raise ValueError(f"chunk_length {chunk_length} must be a multiple of hop_length {hop_length}")
        self.chunk_length = chunk_length
        self.hop_length = hop_length
        self.name = name
        self.rng = np.random.default_rng(seed)

    def __call__(self, uid: str, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        audio = np.asarray(data[self.name], dtype=np.float32)
        if audio.ndim > 1:
            audio = audio[:, 0]  # ESPnet2's codec preprocessor forces a single channel too
        if self.train:
            if len(audio) > self.chunk_length:
                start = int(self.rng.integers(0, len(audio) - self.chunk_length + 1))
                audio = audio[start : start + self.chunk_length]
            target = self.chunk_length
        else:
            target = -(-len(audio) // self.hop_length) * self.hop_length
        return {**data, self.name: np.pad(audio, (0, target - len(audio)))}
