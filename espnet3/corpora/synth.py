"""Small synthetic corpora for ESPnet2 task families, built offline from spoken digit strings.

Each task reuses the machinery of :mod:`espnet3.corpora.digits`: seeded planning (digit
strings, espeak voices whose variants are held out in valid/test), synthesis in
fresh processes (byte-identical per seed), atomic split replacement, a file lock
and a ``corpus.json`` written last so that a complete corpus with the same
parameters is reused. Only what is planned and which files describe it differ:

=====  ========================================================================
task   files in every split (audio tasks also write ``spk2info``)
=====  ========================================================================
lm     ``text`` (``ONE TWO OH``); no audio
mt     ``text.en`` (``one two oh``), ``text.es`` (``uno dos cero``); no audio
st     ``wav.scp``, ``text.en``, ``text.es``, ``utt2spk``, ``spk2utt``
tts    ``wav.scp``, ``text``, ``utt2spk``, ``spk2utt``; one fixed voice in every split
enh    ``wav.scp`` (speech + noise), ``spk1.scp``, ``noise1.scp``, ``utt2snr``,
       ``utt2spk``, ``spk2utt``
lid    ``wav.scp``, ``text``, ``utt2lang``, ``lang2utt``, ``category2utt``,
       ``utt2spk``, ``spk2utt``
spk    train, valid: ``wav.scp``, ``text``, ``utt2spk``, ``spk2utt``, ``category2utt``;
       test: ``wav.scp``, ``text``, ``utt2spk``, ``spk2utt``, ``trial.scp``,
       ``trial2.scp``, ``trial_label``
cls    ``wav.scp``, ``label`` (``count_1`` .. ``count_5``), ``text``, ``utt2spk``, ``spk2utt``
codec  ``wav.scp``, ``utt2spk``, ``spk2utt``
=====  ========================================================================

Task specifics and why:

* st, enh, cls, codec use the digits corpus's speakers (English voices, held-out
  variants in valid/test), so their scores measure generalisation to unseen voices.
* Spanish targets (mt, st) are read digit by digit; English "oh" becomes "cero",
  because reading zero as a letter is an English habit. The same holds in lid.
* lid balances its five languages and gives each its own speakers; utterances have
  at least two digits, since a single short word says little about its language.
* spk is a closed set in train/valid (valid holds out utterances of the training
  speakers, so accuracy can be measured) and an open set in test: verification
  trials, half same-speaker, between speakers never seen in training.
* enh draws noise and SNR from a stream of its own, so its clean speech is exactly
  the digits corpus's for the same seed, and writes speech and noise as int16 first
  so that the mixture is their exact sum.

CLI::

    python -m espnet3.corpora.synth lid --out data/lid --num-train 1500 --seed 0
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from espnet3.corpora import digits
from espnet3.corpora.digits import SPLITS, Utterance
from espnet3.corpora.espeak import TARGET_SAMPLE_RATE, VoiceSpec

# (num_train, num_valid, num_test) per task: each synthesises in seconds on 2 cores.
DEFAULT_SIZES: dict[str, tuple[int, int, int]] = {
    "lm": (5000, 200, 200),
    "mt": (5000, 200, 200),
    "st": (1500, 200, 200),
    "tts": (1000, 100, 100),
    "enh": (1000, 200, 200),
    "lid": (1500, 200, 200),
    "spk": (600, 120, 200),
    "cls": (1000, 200, 200),
    "codec": (1000, 100, 100),
}
TASKS = tuple(DEFAULT_SIZES)
TEXT_TASKS = ("lm", "mt")
# Bump when the files written for the same parameters change.
FORMAT_VERSION = 1
# A file in every split dir that marks it as ours, hence safe to replace.
SPLIT_MARKER = ".espnet3_synth"

# Transcript languages: ISO 639-3 codes, plus the digits corpus's uppercase
# English and None for "the language spoken in the audio".
UPPERCASE_ENGLISH = "ENG"
SPOKEN = None
TEXT_FILES: dict[str, dict[str, str | None]] = {
    "lm": {"text": UPPERCASE_ENGLISH},
    "mt": {"text.en": "eng", "text.es": "spa"},
    "st": {"text.en": "eng", "text.es": "spa"},
    "tts": {"text": "eng"},
    "enh": {},
    "lid": {"text": SPOKEN},
    "spk": {"text": "eng"},
    "cls": {"text": "eng"},
    "codec": {},
}
# Digit words of the non-English languages, indexed by digit value.
DIGIT_WORDS: dict[str, tuple[str, ...]] = {
    "deu": ("null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"),
    "fra": ("zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"),
    "ita": ("zero", "uno", "due", "tre", "quattro", "cinque", "sei", "sette", "otto", "nove"),
    "spa": ("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"),
}
_DIGIT_VALUE = {**{w: i for i, w in enumerate(digits.DIGIT_WORDS)}, "OH": 0}

# espeak-ng base voice per lid language, sorted by code. 'fr-fr' does not exist in
# the shipped voice data; 'fr' is metropolitan French.
LID_VOICES: dict[str, str] = {"deu": "de", "eng": "en-us", "fra": "fr", "ita": "it", "spa": "es"}
_LANGUAGE_OF_VOICE = {voice: language for language, voice in LID_VOICES.items()}
LID_MIN_DIGITS = 2

# One fixed voice, a little slower than the default rate of 175 words/min.
TTS_SPEAKER = "en_us_m3"
TTS_VOICE = VoiceSpec("en-us", "m3", pitch=50, rate=150, pitch_range=50)

SPK_TRAIN_SPEAKERS = 24
SPK_TEST_SPEAKERS = 8

NOISE_KINDS = ("white", "pink", "brown", "hum")
SNR_RANGE_DB = (-5.0, 10.0)
HUM_FREQUENCIES_HZ = (50.0, 60.0)
HUM_HARMONICS = 5
# Mixture peak after scaling (-1 dBFS): leaves room for int16 rounding, so no clipping.
MIX_PEAK = 0.89 * 32767
# Where the audio of each scp file lives inside a split dir.
AUDIO_DIRS = {"wav.scp": "wav", "spk1.scp": "spk1", "noise1.scp": "noise1"}

NUM_COUNT_CLASSES = 5


@dataclass(frozen=True)
class Transcript:
    """An utterance of a text-only task: an id and digit words, no audio."""

    utt_id: str
    words: tuple[str, ...]


@dataclass(frozen=True)
class NoiseSpec:
    """The noise added to one enh utterance; ``seed`` seeds its samples."""

    kind: str
    snr_db: float
    seed: int


@dataclass(frozen=True)
class SplitPlan:
    """Everything one split holds, decided before any audio exists."""

    utts: Sequence[Utterance | Transcript]
    speakers: dict[str, VoiceSpec] = field(default_factory=dict)
    noises: dict[str, NoiseSpec] = field(default_factory=dict)  # enh only
    trials: list[tuple[str, str, int]] = field(default_factory=list)  # spk test only: (enroll, test, 1 if same speaker)


# ---------------------------------------------------------------------- language
def render(words: Sequence[str], language: str) -> str:
    """Write digit words (``digits.DIGIT_WORDS`` and ``OH``) in ``language``.

    English keeps "oh"; every other language reads it as its word for zero.
    """
    if language == UPPERCASE_ENGLISH:
        return " ".join(words)
    if language == "eng":
        return " ".join(w.lower() for w in words)
    return " ".join(DIGIT_WORDS[language][_DIGIT_VALUE[w]] for w in words)


def _spoken_language(task: str, utt: Utterance) -> str:
    return _LANGUAGE_OF_VOICE[utt.spec.voice] if task == "lid" else "eng"


# ---------------------------------------------------------------------- planning
def _lid_digit_count(rng: np.random.Generator, index: int) -> int:
    return int(rng.integers(LID_MIN_DIGITS, digits.MAX_DIGITS + 1))


def _count_class(rng: np.random.Generator, index: int) -> int:
    """cls: 1..NUM_COUNT_CLASSES digits in turn, so that classes are balanced."""
    return 1 + index % NUM_COUNT_CLASSES


def _plan_lid(split: str, num_utts: int, seed: int) -> SplitPlan:
    rng = digits.split_rng(seed, split)
    speakers_per_language = digits.MAX_SPEAKERS[split] // len(LID_VOICES)
    speakers: dict[str, VoiceSpec] = {}
    utts: list[Utterance] = []
    for k, (language, voice) in enumerate(LID_VOICES.items()):
        count = num_utts // len(LID_VOICES) + (k < num_utts % len(LID_VOICES))
        language_speakers = digits.draw_speakers(
            rng, digits.held_out_pool(split, [voice]), min(count, speakers_per_language), f"{split}_{language}_spk"
        )
        speakers.update(language_speakers)
        utts += digits.assign_utterances(rng, language_speakers, count, count_digits=_lid_digit_count)
    return SplitPlan(sorted(utts, key=lambda u: u.utt_id), speakers)


def _draw_trials(rng: np.random.Generator, utts: Sequence[Utterance], num_trials: int
                 ) -> list[tuple[str, str, int]]:
    """Half same-speaker, half different-speaker pairs, never repeated; fewer when
    the split has too few pairs."""
    ids = [u.utt_id for u in utts]
    speaker = np.array([u.speaker_id for u in utts])
    first, second = np.triu_indices(len(utts), k=1)
    same = speaker[first] == speaker[second]
    trials = []
    for label, mask in ((1, same), (0, ~same)):
        candidates = np.flatnonzero(mask)
        for k in rng.choice(candidates, size=min(num_trials // 2, len(candidates)), replace=False):
            trials.append((ids[first[k]], ids[second[k]], label))
    return sorted(trials, key=lambda t: f"{t[0]}*{t[1]}")


def _plan_spk(split: str, counts: dict[str, int], seed: int) -> SplitPlan:
    # The closed set is drawn from train's generator; valid re-draws it identically.
    train_rng = digits.split_rng(seed, "train")
    closed_set = digits.draw_speakers(train_rng, digits.held_out_pool("train", digits.DEFAULT_VOICES),
                                      min(SPK_TRAIN_SPEAKERS, counts["train"]), "spk")
    if split == "train":
        return SplitPlan(digits.assign_utterances(train_rng, closed_set, counts["train"]), closed_set)
    rng = digits.split_rng(seed, split)
    if split == "valid":
        return SplitPlan(digits.assign_utterances(rng, closed_set, counts["valid"], utt_tag="valid_"), closed_set)
    # Valid uses the training speakers, so both held-out variant sets are free for test.
    pool = digits.held_out_pool("valid", digits.DEFAULT_VOICES) + digits.held_out_pool("test", digits.DEFAULT_VOICES)
    # At least two utterances per speaker, so that same-speaker trials exist.
    held_out = digits.draw_speakers(rng, pool, min(SPK_TEST_SPEAKERS, counts["test"] // 2), "test_spk")
    utts = digits.assign_utterances(rng, held_out, counts["test"])
    return SplitPlan(utts, held_out, trials=_draw_trials(rng, utts, counts["test"]))


def _plan_noises(split: str, utts: Sequence[Utterance], seed: int) -> dict[str, NoiseSpec]:
    # The first child of a fresh split generator: independent of the speech plan.
    rng = digits.split_rng(seed, split).spawn(1)[0]
    return {
        u.utt_id: NoiseSpec(
            kind=NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))],
            snr_db=round(float(rng.uniform(*SNR_RANGE_DB)), 2),
            seed=int(rng.integers(2**32)),
        )
        for u in utts
    }


def plan_split(task: str, split: str, counts: dict[str, int], seed: int) -> SplitPlan:
    """Plan one split of ``task`` (pure: no audio, no files).

    Takes every split's count because spk's valid split reuses the training speakers.
    """
    num_utts = counts[split]
    if task in TEXT_TASKS:
        rng = digits.split_rng(seed, split)
        return SplitPlan([
            Transcript(f"{split}_{i:05d}", digits.draw_digit_words(rng, digits.uniform_digit_count(rng, i)))
            for i in range(num_utts)
        ])
    if task == "tts":
        speakers = {TTS_SPEAKER: TTS_VOICE}
        utts = digits.assign_utterances(digits.split_rng(seed, split), speakers, num_utts, utt_tag=f"{split}_")
        return SplitPlan(utts, speakers)
    if task == "lid":
        return _plan_lid(split, num_utts, seed)
    if task == "spk":
        return _plan_spk(split, counts, seed)
    count_digits = _count_class if task == "cls" else digits.uniform_digit_count
    speakers, utts = digits.plan_split(split, num_utts, seed, count_digits=count_digits)
    return SplitPlan(utts, speakers, noises=_plan_noises(split, utts, seed) if task == "enh" else {})


# ------------------------------------------------------------------------- noise
def make_noise(kind: str, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS float noise at 16 kHz: white, pink (1/f), brown (1/f^2) or mains hum."""
    if kind == "hum":
        t = np.arange(num_samples) / TARGET_SAMPLE_RATE
        f0 = HUM_FREQUENCIES_HZ[int(rng.integers(len(HUM_FREQUENCIES_HZ)))]
        phases = rng.uniform(0, 2 * np.pi, size=HUM_HARMONICS)
        noise = sum(np.sin(2 * np.pi * f0 * h * t + phases[h - 1]) / h for h in range(1, HUM_HARMONICS + 1))
    elif kind == "white":
        noise = rng.standard_normal(num_samples)
    else:
        from scipy import fft

        # Power falls as 1/f^exponent: shape white noise's spectrum by f^(-exponent/2).
        # Utterance lengths are arbitrary, often with large prime factors; an FFT of
        # the next 5-smooth length, cut back, is several times faster.
        exponent = {"pink": 1, "brown": 2}[kind]
        length = fft.next_fast_len(num_samples, real=True)
        spectrum = fft.rfft(rng.standard_normal(length))
        freqs = fft.rfftfreq(length)
        spectrum[1:] /= np.sqrt(freqs[1:]) ** exponent
        spectrum[0] = 0.0
        noise = fft.irfft(spectrum, length)[:num_samples]
    return noise / np.sqrt(np.mean(noise**2))


def mix(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale unit-RMS ``noise`` to ``snr_db`` below int16 ``speech``; returns int16
    (speech, noise, mixture) with mixture == speech + noise exactly.

    Both get the same gain, at most 1, that keeps the mixture's peak at MIX_PEAK, so
    the SNR is unchanged and nothing clips; they are rounded to int16 before summing
    so that the written files add up.
    """
    speech = speech.astype(np.float64)
    noise = noise * np.sqrt(np.mean(speech**2) / 10 ** (snr_db / 10))
    gain = min(1.0, MIX_PEAK / np.max(np.abs(speech + noise)))
    speech_i16, noise_i16 = (np.clip(np.rint(x * gain), -32768, 32767).astype(np.int16) for x in (speech, noise))
    mixture = np.clip(speech_i16.astype(np.int32) + noise_i16, -32768, 32767).astype(np.int16)
    return speech_i16, noise_i16, mixture


def _add_noise(split_dir: Path, plan: SplitPlan) -> None:
    """Turn the clean speech synthesised into ``spk1/`` into spk1/, noise1/ and wav/ (mixture)."""
    import soundfile

    for sub in ("noise1", "wav"):
        (split_dir / sub).mkdir()
    for utt in plan.utts:
        spec = plan.noises[utt.utt_id]
        name = f"{utt.utt_id}.wav"
        clean, _ = soundfile.read(split_dir / "spk1" / name, dtype="int16")
        noise = make_noise(spec.kind, len(clean), np.random.default_rng(spec.seed))
        for sub, audio in zip(("spk1", "noise1", "wav"), mix(clean, noise, spec.snr_db)):
            soundfile.write(split_dir / sub / name, audio, TARGET_SAMPLE_RATE, subtype="PCM_16", format="WAV")


# ------------------------------------------------------------------------- files
def _split_files(task: str, split: str, plan: SplitPlan, final_dir: Path) -> dict[str, list[str]]:
    """The lines of every file of one split; audio paths point into ``final_dir``."""
    files = {
        name: [f"{u.utt_id} {render(u.words, language or _spoken_language(task, u))}" for u in plan.utts]
        for name, language in TEXT_FILES[task].items()
    }
    files[SPLIT_MARKER] = [f"written by espnet3.corpora.synth (task {task}); regenerating replaces this directory"]
    if task in TEXT_TASKS:
        return files
    files["wav.scp"] = digits.scp_lines(plan.utts, final_dir / "wav")
    files.update(digits.speaker_files(plan.speakers, plan.utts))
    if task == "enh":
        files["spk1.scp"] = digits.scp_lines(plan.utts, final_dir / "spk1")
        files["noise1.scp"] = digits.scp_lines(plan.utts, final_dir / "noise1")
        files["utt2snr"] = [f"{u.utt_id} {plan.noises[u.utt_id].snr_db:.2f}" for u in plan.utts]
    elif task == "lid":
        languages = [(u.utt_id, _spoken_language(task, u)) for u in plan.utts]
        files["utt2lang"] = [f"{utt} {language}" for utt, language in languages]
        # ESPnet2's category-balanced sampler reads category2utt.
        files["lang2utt"] = files["category2utt"] = digits.group_lines(languages)
    elif task == "cls":
        files["label"] = [f"{u.utt_id} count_{len(u.words)}" for u in plan.utts]
    elif task == "spk" and split != "test":
        files["category2utt"] = files["spk2utt"]
    elif task == "spk":
        wav = {u.utt_id: final_dir / "wav" / f"{u.utt_id}.wav" for u in plan.utts}
        files["trial.scp"] = [f"{a}*{b} {wav[a]}" for a, b, _ in plan.trials]
        files["trial2.scp"] = [f"{a}*{b} {wav[b]}" for a, b, _ in plan.trials]
        files["trial_label"] = [f"{a}*{b} {label}" for a, b, label in plan.trials]
    return files


def is_complete(out_dir: str | os.PathLike, params: dict) -> bool:
    """True when ``out_dir`` holds a finished corpus generated with ``params``, with
    every file its manifest lists and every audio file its scp files name."""
    out_dir = Path(out_dir).resolve()
    manifest = digits.read_manifest(out_dir)
    if manifest is None or manifest.get("params") != params:
        return False
    for split in SPLITS:
        split_dir, stats = out_dir / split, manifest["splits"][split]
        if not all((split_dir / name).is_file() for name in stats["files"]):
            return False
        for name, sub in AUDIO_DIRS.items():
            if name in stats["files"] and not digits.scp_is_complete(split_dir / name, split_dir / sub,
                                                                     stats["num_utts"]):
                return False
    return True


# ------------------------------------------------------------------------ corpus
def _synthesize(task: str, plans: dict[str, SplitPlan], tmp_dirs: dict[str, Path], seed: int, workers: int,
                log: Callable[[str], object], started: float) -> dict[str, dict]:
    # enh synthesises the clean speech where spk1.scp expects it, then adds noise.
    audio_dirs = {split: tmp_dirs[split] / ("spk1" if task == "enh" else "wav") for split in SPLITS}
    for audio_dir in audio_dirs.values():
        audio_dir.mkdir()
    jobs = {
        split: [(u.utt_id, render(u.words, _spoken_language(task, u)), u.spec) for u in plans[split].utts]
        for split in SPLITS
    }
    stats = {}
    for split, samples, seconds in digits.synthesize_splits(jobs, audio_dirs, seed, workers):
        if task == "enh":
            _add_noise(tmp_dirs[split], plans[split])
        utts = plans[split].utts
        stats[split] = digits.summarize_split(f"synth {task}", split, len(utts), len({u.speaker_id for u in utts}),
                                              samples, seconds, started, log)
    return stats


def _text_stats(task: str, plans: dict[str, SplitPlan], log: Callable[[str], object], started: float
                ) -> dict[str, dict]:
    stats = {}
    for split in SPLITS:
        log(f"[synth {task}] {split}: {len(plans[split].utts)} utts (text only), "
            f"{time.perf_counter() - started:.1f} s elapsed")
        stats[split] = {"num_utts": len(plans[split].utts), "num_speakers": 0, "hours": 0.0}
    return stats


def _check_task(task: object) -> str:
    if not isinstance(task, str):
        raise TypeError(f"task must be a str, one of {', '.join(TASKS)}; got {type(task).__name__} {task!r}")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    return task


def _check_voices(task: str) -> None:
    """Fail before touching the disk if the espeak data lacks a voice the task speaks with."""
    if task in TEXT_TASKS:
        return
    from espnet3.corpora.espeak import get_synthesizer

    synth = get_synthesizer()
    if task == "tts":
        synth.check_voice(TTS_VOICE.voice, TTS_VOICE.variant)
        return
    for voice in LID_VOICES.values() if task == "lid" else digits.DEFAULT_VOICES:
        synth.check_voice(voice)


def generate(
    task: str,
    out_dir: str | os.PathLike,
    num_train: int | None = None,
    num_valid: int | None = None,
    num_test: int | None = None,
    seed: int = 0,
    *,
    workers: int | None = None,
    force: bool = False,
    verbose: bool = True,
) -> dict[str, Path]:
    """Generate (or reuse) the synthetic corpus of ``task``; returns ``{split: data_dir}``.

    Counts left as None take the task's DEFAULT_SIZES. Safe to call from several
    processes at once, and cheap to call again: a complete corpus with identical
    parameters is returned without touching a file.
    """
    task = _check_task(task)
    defaults = dict(zip(SPLITS, DEFAULT_SIZES[task]))
    given = {"train": num_train, "valid": num_valid, "test": num_test}
    counts = {
        split: digits.check_count(f"num_{split}", defaults[split] if value is None else value)
        for split, value in given.items()
    }
    seed = digits.check_count("seed", seed)
    if task == "spk" and counts["valid"] and not counts["train"]:
        raise ValueError("spk: num_valid > 0 needs num_train > 0, since valid holds out utterances of the "
                         "training speakers")
    if task == "spk" and 0 < counts["test"] < 4:
        raise ValueError(f"spk: num_test must be 0 or >= 4, got {counts['test']}: verification trials need two "
                         "held-out speakers with two utterances each")
    _check_voices(task)
    workers = digits.resolve_workers(workers)
    params = {
        "format_version": FORMAT_VERSION,
        # The audio comes from digits' synthesis; a change there must invalidate corpora here too.
        "synthesis_version": digits.FORMAT_VERSION,
        "task": task,
        **{f"num_{split}": counts[split] for split in SPLITS},
        "seed": seed,
        "sample_rate": TARGET_SAMPLE_RATE,
    }
    log = print if verbose else (lambda *a, **k: None)

    def fill(tmp_dirs: dict[str, Path], final_dirs: dict[str, Path], started: float) -> dict[str, dict]:
        plans = {split: plan_split(task, split, counts, seed) for split in SPLITS}
        if task in TEXT_TASKS:
            stats = _text_stats(task, plans, log, started)
        else:
            stats = _synthesize(task, plans, tmp_dirs, seed, workers, log, started)
        for split in SPLITS:
            files = _split_files(task, split, plans[split], final_dirs[split])
            for name, lines in files.items():
                digits.write_lines(tmp_dirs[split], name, lines)
            stats[split]["files"] = sorted(files)
        return stats

    return digits.build_corpus(out_dir, params, fill, lambda d: is_complete(d, params), tag=f"synth {task}",
                               writer="espnet3.corpora.synth", marker=SPLIT_MARKER, force=force, log=log)


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    sizes = "\n".join(f"  {task:<6} {t:>5} {v:>4} {s:>4}" for task, (t, v, s) in DEFAULT_SIZES.items())
    parser = argparse.ArgumentParser(
        prog="python -m espnet3.corpora.synth",
        description="Synthesise a small corpus (Kaldi/ESPnet2 data dirs) for one ESPnet2 task family.",
        epilog=f"default sizes:\n  task   train valid test\n{sizes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("task", choices=TASKS)
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--num-train", type=digits.non_negative_int, default=None, help="default: per task")
    parser.add_argument("--num-valid", type=digits.non_negative_int, default=None, help="default: per task")
    parser.add_argument("--num-test", type=digits.non_negative_int, default=None, help="default: per task")
    parser.add_argument("--seed", type=digits.non_negative_int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="synthesis processes (default: min(4, cores))")
    parser.add_argument("--force", action="store_true", help="regenerate even if a matching corpus exists")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        generate(args.task, args.out, args.num_train, args.num_valid, args.num_test, args.seed,
                 workers=args.workers, force=args.force)
    except (ValueError, TypeError, OSError) as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
