"""Tiny Kaldi-style data directories of sine-wave WAVs, for any test that needs real audio files."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile

SAMPLE_RATE = 16000
WORDS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")

# The smallest ESPnet2 ASR model block (`task: asr1`) that trains and decodes on these directories.
TINY_ASR_MODEL = {
    "frontend_conf": {"n_fft": 128, "hop_length": 64, "n_mels": 16},
    "normalize": "utterance_mvn",
    "encoder": "transformer",
    "encoder_conf": {"output_size": 16, "attention_heads": 2, "linear_units": 32, "num_blocks": 1},
    "decoder": "transformer",
    "decoder_conf": {"attention_heads": 2, "linear_units": 32, "num_blocks": 1},
    "model_conf": {"ctc_weight": 0.5},
}


def sine(num_samples: int, freq: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    t = np.arange(num_samples) / sample_rate
    return (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16)


def write_datadir(
    root: Path,
    utterances: Sequence[tuple[str, int, str]],
    *,
    speakers: Sequence[str] | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> Path:
    """Write ``root/{wav.scp,text,utt2spk,spk2utt}`` and ``root/wav/*.wav`` (16-bit mono sines).

    ``utterances`` are ``(utt_id, num_samples, transcript)``; wav.scp holds absolute paths, as the
    digits corpus generator writes them.
    """
    root = Path(root)
    (root / "wav").mkdir(parents=True, exist_ok=True)
    speakers = speakers or [f"spk{k % 2}" for k in range(len(utterances))]
    wav_lines, text_lines, spk_lines = [], [], []
    spk2utt: dict[str, list[str]] = {}
    for k, ((utt, n, text), spk) in enumerate(zip(utterances, speakers)):
        path = (root / "wav" / f"{utt}.wav").resolve()
        soundfile.write(str(path), sine(n, 200 + 37 * k, sample_rate), sample_rate, subtype="PCM_16")
        wav_lines.append(f"{utt} {path}\n")
        text_lines.append(f"{utt} {text}\n")
        spk_lines.append(f"{utt} {spk}\n")
        spk2utt.setdefault(spk, []).append(utt)
    (root / "wav.scp").write_text("".join(wav_lines))
    (root / "text").write_text("".join(text_lines))
    (root / "utt2spk").write_text("".join(spk_lines))
    (root / "spk2utt").write_text("".join(f"{s} {' '.join(u)}\n" for s, u in spk2utt.items()))
    return root


def digit_utterances(
    count: int, *, seed: int = 0, prefix: str = "utt", min_samples: int = 1600, max_samples: int = 8000
):
    """``count`` random digit-string utterances with random lengths, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        words = " ".join(WORDS[d] for d in rng.integers(0, 10, size=rng.integers(1, 5)))
        out.append((f"{prefix}{k:04d}", int(rng.integers(min_samples, max_samples)), words))
    return out


def make_digits_dirs(root: Path, *, num_train: int = 24, num_valid: int = 8) -> dict[str, Path]:
    """``root/train`` and ``root/valid`` of random digit utterances."""
    root = Path(root)
    return {
        "train": write_datadir(root / "train", digit_utterances(num_train, seed=1, prefix="tr")),
        "valid": write_datadir(root / "valid", digit_utterances(num_valid, seed=2, prefix="dv")),
    }


def train_config(root: Path, dirs: dict[str, Path], **dataloader) -> dict:
    """A minimal train.yaml-shaped dict (``data``, ``dataloader``, ``seed``, ``stats_dir``) for ``dirs``."""
    root = Path(root)
    return {
        "seed": 7,
        "stats_dir": str(root / "stats"),
        "data": {
            "train": str(dirs["train"]),
            "valid": str(dirs["valid"]),
            "test": {k: str(v) for k, v in dirs.items() if k not in ("train", "valid")},
            "token_type": "char",
            "nbpe": 30,
            "bpemodel": str(root / "bpe.model"),
            "token_list": str(root / "tokens.txt"),
            "digits": None,
        },
        "dataloader": {
            "batch_type": "numel", "batch_bins": 40000, "batch_size": 4, "num_workers": 0, **dataloader
        },
    }


def resume_in_another_group(old: Sequence, new: Sequence, epoch: int, done: int) -> tuple[Counter, int]:
    """The old group's ranks train ``done`` batches of ``epoch``; the new group's samplers resume it.

    Returns what the epoch trained, utterance by utterance, over both groups, and the new group's
    epoch length, after asserting that every new rank takes the same number of steps and that its
    position plus the batches left is that length (what Lightning counts with).
    """
    for sampler in old:
        sampler.set_epoch(epoch)
    seen = Counter(u for sampler in old for batch in list(sampler)[:done] for u in batch)
    progress = old[0].progress(done)
    lengths = set()
    for sampler in new:
        sampler.resume(progress)
        rest = list(sampler)
        lengths.add((len(sampler), sampler.resumed_batches_done(), len(rest)))
        seen.update(u for batch in rest for u in batch)
    assert len(lengths) == 1, "every new rank takes the same number of steps"
    (length, position, rest), = lengths
    assert length == position + rest, "where the epoch stands plus the batches left is its length"
    return seen, length
