"""Synthetic spoken-digits corpus: the default training data when there is no internet.

Writes an ESPnet2/Kaldi-style data directory per split (``wav.scp``, ``text``,
``utt2spk``, ``spk2utt``, plus ``spk2info`` describing each synthetic speaker) with
16 kHz 16-bit PCM WAV files under ``<split>/wav/``.

Design choices and why:

* Valid and test speakers use espeak variants that never occur in train, so the
  held-out error rate measures generalisation to unseen voices, not memorisation.
* Every split draws from its own child of ``SeedSequence(seed)``: changing
  ``num_valid`` does not reshuffle the training set.
* espeak-ng's output depends on what the process synthesised before (see
  :mod:`espnet3.corpora.espeak`), so each fixed-size chunk of utterances is synthesised
  in a fresh spawned process. The result is byte-identical for a given seed no
  matter how many workers run, and chunks of the training split run in parallel.
* ``corpus.json`` is written last and records the parameters; a later call with
  the same parameters on a complete directory returns without touching any file.

CLI::

    python -m espnet3.corpora.digits --out data/digits --num-train 2000 --num-valid 200 \
        --num-test 200 --seed 0
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from espnet3.corpora.espeak import TARGET_SAMPLE_RATE, VoiceSpec

SPLITS = ("train", "valid", "test")
DIGIT_WORDS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")
# Spoken "oh" for 0 in a fraction of zeros, as people read phone numbers.
OH_PROBABILITY = 0.3
MIN_DIGITS, MAX_DIGITS = 1, 7

# Accents shared by all splits; the held-out dimension is the variant (timbre).
# 'en-shaw' (Shavian script) and 'en-us-nyc' are left out of the default set: the
# former is meant for another script, the latter adds little over en-us.
DEFAULT_VOICES: tuple[str, ...] = (
    "en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
)
SPLIT_VARIANTS: dict[str, tuple[str, ...]] = {
    "train": ("m1", "m2", "m3", "m4", "m5", "m6", "f1", "f2", "f3", "klatt"),
    "valid": ("m7", "f4"),
    "test": ("m8", "f5"),
}
MAX_SPEAKERS = {"train": 40, "valid": 10, "test": 10}
# Rates above ~220 words/min make 1-digit utterances too short for CTC after 4x
# subsampling; below ~130 the audio is needlessly long.
RATE_RANGE = (130, 220)
PITCH_RANGE = (20, 80)
PITCH_SPREAD_RANGE = (30, 90)

# Silence added around every utterance: espeak trims its output tightly, and a
# single fast digit (~0.2 s) leaves only ~4 frames after 4x conv subsampling,
# fewer than CTC needs for a word like SEVEN; real recordings have margins too.
PAD_SECONDS = 0.1

# Utterances synthesised per fresh worker process. Part of the output's identity:
# changing it changes the audio, so it is tied to FORMAT_VERSION.
CHUNK_SIZE = 500
FORMAT_VERSION = 1
MANIFEST_NAME = "corpus.json"
SPEAKER_INFO_NAME = "spk2info"
KALDI_FILES = ("wav.scp", "text", "utt2spk", "spk2utt", SPEAKER_INFO_NAME)


@dataclass(frozen=True)
class Utterance:
    utt_id: str
    speaker_id: str
    words: tuple[str, ...]
    spec: VoiceSpec

    @property
    def spoken_text(self) -> str:
        """What espeak reads: lowercase words, so it never spells them out as letters."""
        return " ".join(w.lower() for w in self.words)


# ---------------------------------------------------------------------- planning
# The helpers below are shared with espnet3.corpora.synth, which plans other task
# families from the same digit strings and voices.
def check_count(name: str, value: object) -> int:
    """Validate a non-negative int argument (a count or a seed) named ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def split_rng(seed: int, split: str) -> np.random.Generator:
    """The generator of one split: its own child of ``SeedSequence(seed)``, so that
    changing the size of one split does not reshuffle another."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(len(SPLITS))[SPLITS.index(split)])


def held_out_pool(split: str, voices: Sequence[str]) -> list[tuple[str, str]]:
    """The (voice, variant) pairs ``split`` may use: voices are shared, variants are not."""
    return [(v, var) for v in voices for var in SPLIT_VARIANTS[split]]


def draw_speakers(rng: np.random.Generator, pool: Sequence[tuple[str, str]], num_speakers: int,
                  prefix: str) -> dict[str, VoiceSpec]:
    """Speakers ``<prefix>000``, ``<prefix>001``, ...: distinct pool entries (reused
    only once the pool is exhausted), each with its own random prosody."""
    order = rng.permutation(len(pool))
    speakers: dict[str, VoiceSpec] = {}
    for k in range(num_speakers):
        voice, variant = pool[int(order[k % len(pool)])]
        speakers[f"{prefix}{k:03d}"] = VoiceSpec(
            voice=voice,
            variant=variant,
            pitch=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
            rate=int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1)),
            pitch_range=int(rng.integers(PITCH_SPREAD_RANGE[0], PITCH_SPREAD_RANGE[1] + 1)),
        )
    return speakers


def uniform_digit_count(rng: np.random.Generator, index: int) -> int:
    """How many digits utterance ``index`` has: uniform in [MIN_DIGITS, MAX_DIGITS]."""
    return int(rng.integers(MIN_DIGITS, MAX_DIGITS + 1))


def draw_digit_words(rng: np.random.Generator, num_digits: int) -> tuple[str, ...]:
    """A random digit string as words from DIGIT_WORDS, with "OH" for some zeros."""
    digits = rng.integers(0, 10, size=num_digits)
    use_oh = rng.random(num_digits) < OH_PROBABILITY
    return tuple("OH" if d == 0 and oh else DIGIT_WORDS[int(d)] for d, oh in zip(digits, use_oh))


def assign_utterances(
    rng: np.random.Generator,
    speakers: dict[str, VoiceSpec],
    num_utts: int,
    *,
    count_digits: Callable[[np.random.Generator, int], int] = uniform_digit_count,
    utt_tag: str = "",
) -> list[Utterance]:
    """Draw ``num_utts`` transcripts and spread them evenly over ``speakers``.

    ``utt_tag`` goes between speaker id and index; it keeps utterance ids unique
    when two splits share speakers.
    """
    speaker_ids = sorted(speakers)
    # Balanced: every speaker gets floor/ceil(num_utts / num_speakers) utterances.
    assignment = rng.permutation(np.arange(num_utts) % max(len(speakers), 1))
    utts = []
    for i in range(num_utts):
        words = draw_digit_words(rng, count_digits(rng, i))
        spk = speaker_ids[int(assignment[i])]
        # Utterance ids start with the speaker id so that sorting utt2spk by
        # utterance also groups it by speaker, as Kaldi's validate_data_dir wants.
        utts.append(Utterance(f"{spk}_{utt_tag}{i:05d}", spk, words, speakers[spk]))
    utts.sort(key=lambda u: u.utt_id)
    return utts


def plan_split(split: str, num_utts: int, seed: int, voices: Sequence[str] = DEFAULT_VOICES, *,
               count_digits: Callable[[np.random.Generator, int], int] = uniform_digit_count,
               num_speakers: int | None = None,
               ) -> tuple[dict[str, VoiceSpec], list[Utterance]]:
    """Choose speakers and transcripts for one split, without synthesising anything.

    Kept pure (seed in, plan out) so determinism and speaker disjointness can be
    reasoned about and tested independently of espeak. ``num_speakers`` defaults to
    ``MAX_SPEAKERS[split]`` (never more than ``num_utts``).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    num_utts = check_count(f"num_{split}", num_utts)
    seed = check_count("seed", seed)
    rng = split_rng(seed, split)
    wanted = MAX_SPEAKERS[split] if num_speakers is None else num_speakers
    speakers = draw_speakers(rng, held_out_pool(split, voices), min(num_utts, wanted), f"{split}_spk")
    return speakers, assign_utterances(rng, speakers, num_utts, count_digits=count_digits)


# --------------------------------------------------------------------- synthesis
def _synthesize_chunk(wav_dir: str, jobs: list[tuple[str, str, VoiceSpec]], rand_seed: int
                      ) -> tuple[int, float]:
    """Worker entry point: runs in a fresh process so espeak starts from a known state."""
    import soundfile

    from espnet3.corpora.espeak import get_synthesizer

    started = time.perf_counter()
    synth = get_synthesizer()
    synth.reset_random_state(rand_seed)
    total = 0
    for utt_id, text, spec in jobs:
        audio = synth.synthesize_16k(text, spec)
        pad = int(round(PAD_SECONDS * TARGET_SAMPLE_RATE))
        audio = np.pad(audio, (pad, pad))
        soundfile.write(os.path.join(wav_dir, f"{utt_id}.wav"), audio, TARGET_SAMPLE_RATE,
                        subtype="PCM_16", format="WAV")
        total += len(audio)
    return total, time.perf_counter() - started


def resolve_workers(workers: int | None) -> int:
    """Synthesis processes to use: ``None`` means min(4, cores)."""
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    return workers


def synthesize_splits(jobs: dict[str, list[tuple[str, str, VoiceSpec]]], wav_dirs: dict[str, Path],
                      seed: int, workers: int) -> Iterator[tuple[str, int, float]]:
    """Synthesise ``(utt_id, text, voice)`` jobs into ``<wav_dir>/<utt_id>.wav``, padded.

    Yields ``(split, samples written, synthesis seconds summed over workers)`` as
    each split finishes, in ``jobs`` order, while later splits keep running.
    """
    futures: dict[str, list] = {split: [] for split in jobs}
    # max_tasks_per_child=1: every chunk gets a fresh process, hence a fresh espeak
    # state, hence output independent of scheduling and worker count.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, max_tasks_per_child=1) as pool:
        for split, split_jobs in jobs.items():
            split_index = SPLITS.index(split)
            for c, start in enumerate(range(0, len(split_jobs), CHUNK_SIZE)):
                rand_seed = (seed * 1_000_003 + split_index * 10_007 + c) & 0x7FFFFFFF
                futures[split].append(
                    pool.submit(_synthesize_chunk, str(wav_dirs[split]), split_jobs[start:start + CHUNK_SIZE],
                                rand_seed)
                )
        for split in jobs:
            done = [f.result() for f in futures[split]]
            yield split, sum(d[0] for d in done), sum(d[1] for d in done)


def summarize_split(tag: str, split: str, num_utts: int, num_speakers: int, samples: int,
                    synth_seconds: float, started: float, log: Callable[[str], object]) -> dict:
    """Log one progress line for a synthesised split; returns its manifest stats."""
    log(
        f"[{tag}] {split}: {num_utts} utts, {num_speakers} speakers, "
        f"{samples / TARGET_SAMPLE_RATE / 3600:.3f} h audio, "
        f"{synth_seconds:.1f} s synthesis (summed over workers), "
        f"{time.perf_counter() - started:.1f} s elapsed"
    )
    return {
        "num_utts": num_utts,
        "num_speakers": num_speakers,
        "hours": round(samples / TARGET_SAMPLE_RATE / 3600, 6),
    }


def _synthesize_splits(plans: dict[str, tuple[dict[str, VoiceSpec], list[Utterance]]],
                       tmp_dirs: dict[str, Path], seed: int, workers: int, log, started: float
                       ) -> dict[str, dict]:
    """Synthesise every split into its temporary directory; returns per-split stats."""
    jobs = {split: [(u.utt_id, u.spoken_text, u.spec) for u in plans[split][1]] for split in SPLITS}
    wav_dirs = {split: tmp_dirs[split] / "wav" for split in SPLITS}
    for wav_dir in wav_dirs.values():
        wav_dir.mkdir()
    return {
        split: summarize_split("digits", split, len(plans[split][1]), len(plans[split][0]), samples, seconds,
                               started, log)
        for split, samples, seconds in synthesize_splits(jobs, wav_dirs, seed, workers)
    }


# --------------------------------------------------------------------- data dirs
def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def write_lines(split_dir: Path, name: str, lines: Sequence[str]) -> None:
    """Write one Kaldi-style file: one line per entry, newline-terminated, UTF-8."""
    (split_dir / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def scp_lines(utts: Sequence[Utterance], audio_dir: Path) -> list[str]:
    """``<utt> <audio_dir>/<utt>.wav`` lines; ``audio_dir`` is where the split will end up."""
    return [f"{u.utt_id} {audio_dir / (u.utt_id + '.wav')}" for u in utts]


def group_lines(pairs: Iterable[tuple[str, str]]) -> list[str]:
    """Invert ``(utt, key)`` pairs into sorted ``<key> <utt> <utt> ...`` lines (spk2utt and the like)."""
    groups: dict[str, list[str]] = {}
    for utt, key in pairs:
        groups.setdefault(key, []).append(utt)
    return [f"{k} {' '.join(sorted(groups[k]))}" for k in sorted(groups)]


def speaker_files(speakers: dict[str, VoiceSpec], utts: Sequence[Utterance]) -> dict[str, list[str]]:
    """utt2spk, spk2utt and spk2info of ``utts``; speakers without utterances are left out."""
    used = {u.speaker_id for u in utts}
    return {
        "utt2spk": [f"{u.utt_id} {u.speaker_id}" for u in utts],
        "spk2utt": group_lines((u.utt_id, u.speaker_id) for u in utts),
        SPEAKER_INFO_NAME: [
            f"{s} voice={v.voice} variant={v.variant or ''} pitch={v.pitch} rate={v.rate} range={v.pitch_range}"
            for s, v in sorted(speakers.items()) if s in used
        ],
    }


def _write_kaldi_files(split_dir: Path, final_dir: Path, speakers: dict[str, VoiceSpec],
                       utts: list[Utterance]) -> None:
    files = {
        "wav.scp": scp_lines(utts, final_dir / "wav"),
        "text": [f"{u.utt_id} {' '.join(u.words)}" for u in utts],
        **speaker_files(speakers, utts),
    }
    for name, lines in files.items():
        write_lines(split_dir, name, lines)


def read_spk2info(split_dir: str | os.PathLike) -> dict[str, VoiceSpec]:
    """Speaker settings of a generated split, e.g. to check held-out voices."""
    specs = {}
    for line in _lines(Path(split_dir) / SPEAKER_INFO_NAME):
        spk, *fields = line.split()
        kv = dict(f.split("=", 1) for f in fields)
        specs[spk] = VoiceSpec(kv["voice"], kv["variant"] or None, int(kv["pitch"]),
                               int(kv["rate"]), int(kv["range"]))
    return specs


# ------------------------------------------------------- manifest and replacement
def _params(num_train: int, num_valid: int, num_test: int, seed: int, voices: Sequence[str],
            num_train_speakers: int) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "num_train": num_train,
        "num_valid": num_valid,
        "num_test": num_test,
        "num_train_speakers": num_train_speakers,
        "seed": seed,
        "voices": list(voices),
        "sample_rate": TARGET_SAMPLE_RATE,
    }


def read_manifest(out_dir: Path) -> dict | None:
    """The ``corpus.json`` of ``out_dir``, or None when missing or unreadable."""
    try:
        manifest = json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def scp_is_complete(scp: Path, audio_dir: Path, num_lines: int) -> bool:
    """True when ``scp`` has ``num_lines`` entries whose files exist in ``audio_dir``.

    wav.scp holds absolute paths, which break if the corpus was moved or partly deleted.
    """
    entries = [line.split(maxsplit=1) for line in _lines(scp)]
    return len(entries) == num_lines and all(
        len(entry) == 2 and Path(entry[1]).parent == audio_dir and Path(entry[1]).is_file() for entry in entries
    )


def is_complete(out_dir: str | os.PathLike, params: dict) -> bool:
    """True when ``out_dir`` holds a finished corpus generated with ``params``.

    Also checks the WAV files still exist under this directory, since wav.scp holds
    absolute paths that break if the directory was moved or partly deleted.
    """
    out_dir = Path(out_dir).resolve()
    manifest = read_manifest(out_dir)
    if manifest is None or manifest.get("params") != params:
        return False
    for split in SPLITS:
        split_dir = out_dir / split
        if not all((split_dir / name).is_file() for name in KALDI_FILES):
            return False
        if not scp_is_complete(split_dir / "wav.scp", split_dir / "wav", params[f"num_{split}"]):
            return False
    return True


def _prepare_out_dir(out_dir: Path, tag: str) -> Path:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-probe-"):
            pass
    except OSError as exc:
        raise OSError(
            f"cannot write the {tag} corpus to {out_dir}: {exc.strerror or exc}; "
            "pass a writable directory (--out)"
        ) from exc
    return out_dir.resolve()


def _check_replaceable(final_dir: Path, marker: str, writer: str) -> None:
    """Regeneration deletes old split dirs; never delete something we did not write."""
    if not final_dir.exists():
        return
    ours = final_dir.is_dir() and (
        (final_dir / marker).is_file() or not any(final_dir.iterdir())
    )
    if not ours:
        raise FileExistsError(
            f"{final_dir} exists and was not written by {writer}; refusing to "
            "delete it. Choose another --out directory or remove it yourself."
        )


def _replace_split_dir(tmp_dir: Path, final_dir: Path, marker: str, writer: str) -> None:
    _check_replaceable(final_dir, marker, writer)
    if final_dir.exists():
        shutil.rmtree(final_dir)
    tmp_dir.rename(final_dir)


def build_corpus(
    out_dir: str | os.PathLike,
    params: dict,
    fill: Callable[[dict[str, Path], dict[str, Path], float], dict[str, dict]],
    complete: Callable[[Path], bool],
    *,
    tag: str,
    writer: str,
    marker: str,
    force: bool,
    log: Callable[[str], object],
) -> dict[str, Path]:
    """Reuse or (re)build a corpus in ``out_dir``; returns ``{split: data_dir}``.

    The transaction every synthetic corpus shares: a file lock serialises
    concurrent callers; ``complete(out_dir)`` decides reuse; otherwise
    ``fill(tmp_dirs, final_dirs, started)`` writes each split into an empty
    temporary directory (with paths pointing into ``final_dirs``) and returns
    per-split manifest stats. Old split dirs are replaced only if they hold
    ``marker`` (so a foreign directory is never deleted), and ``corpus.json`` is
    written last, so an interrupted run is never mistaken for a complete one.
    """
    out_dir = _prepare_out_dir(Path(out_dir), tag)
    result = {split: out_dir / split for split in SPLITS}

    from filelock import FileLock

    with FileLock(str(out_dir / ".corpus.lock")):
        if not force and complete(out_dir):
            log(f"[{tag}] reusing complete corpus in {out_dir} ({MANIFEST_NAME} matches)")
            return result
        for split in SPLITS:
            _check_replaceable(result[split], marker, writer)
        (out_dir / MANIFEST_NAME).unlink(missing_ok=True)

        started = time.perf_counter()
        tmp_dirs = {split: out_dir / f".{split}.partial" for split in SPLITS}
        try:
            for tmp in tmp_dirs.values():
                if tmp.exists():
                    shutil.rmtree(tmp)
                tmp.mkdir()
            stats = fill(tmp_dirs, result, started)
            for split in SPLITS:
                _replace_split_dir(tmp_dirs[split], result[split], marker, writer)
        finally:
            # Leave no half-written split behind (success renamed them away already).
            for tmp in tmp_dirs.values():
                shutil.rmtree(tmp, ignore_errors=True)

        manifest = {"params": params, "splits": stats}
        tmp_manifest = out_dir / f".{MANIFEST_NAME}.partial"
        tmp_manifest.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp_manifest, out_dir / MANIFEST_NAME)
        total_h = sum(s["hours"] for s in stats.values())
        log(f"[{tag}] wrote {out_dir}: {total_h:.3f} h total in {time.perf_counter() - started:.1f} s")
    return result


def generate_corpus(
    out_dir: str | os.PathLike,
    num_train: int = 2000,
    num_valid: int = 200,
    num_test: int = 200,
    seed: int = 0,
    *,
    voices: Sequence[str] = DEFAULT_VOICES,
    num_train_speakers: int = MAX_SPEAKERS["train"],
    workers: int | None = None,
    force: bool = False,
    verbose: bool = True,
) -> dict[str, Path]:
    """Generate (or reuse) the digits corpus; returns ``{split: data_dir}``.

    Safe to call from several processes at once (a file lock serialises them), and
    cheap to call again: a complete corpus with identical parameters is reused.
    ``num_train_speakers`` spreads the training utterances over more synthetic voices
    (voice x variant pairs with their own pitch and rate; pairs repeat past the pool's
    size).
    """
    counts = {
        "train": check_count("num_train", num_train),
        "valid": check_count("num_valid", num_valid),
        "test": check_count("num_test", num_test),
    }
    seed = check_count("seed", seed)
    num_train_speakers = check_count("num_train_speakers", num_train_speakers)
    if num_train_speakers < 1:
        raise ValueError(f"num_train_speakers must be >= 1, got {num_train_speakers}")
    if isinstance(voices, str) or not isinstance(voices, Sequence) or not voices:
        raise TypeError(f"voices must be a non-empty sequence of voice names, got {voices!r}")
    voices = list(voices)
    if len(set(voices)) != len(voices):
        raise ValueError(f"voices contains duplicates: {voices}")
    from espnet3.corpora.espeak import get_synthesizer

    synth = get_synthesizer()
    for voice in voices:
        if "+" in voice:
            raise ValueError(
                f"voice {voice!r} names a variant; pass base voices only, variants are "
                "assigned per split so that valid/test use held-out ones"
            )
        synth.check_voice(voice)
    workers = resolve_workers(workers)
    params = _params(counts["train"], counts["valid"], counts["test"], seed, voices, num_train_speakers)
    log = print if verbose else (lambda *a, **k: None)

    def fill(tmp_dirs: dict[str, Path], final_dirs: dict[str, Path], started: float) -> dict[str, dict]:
        plans = {split: plan_split(split, counts[split], seed, voices,
                                   num_speakers=num_train_speakers if split == "train" else None)
                 for split in SPLITS}
        stats = _synthesize_splits(plans, tmp_dirs, seed, workers, log, started)
        for split in SPLITS:
            speakers, utts = plans[split]
            _write_kaldi_files(tmp_dirs[split], final_dirs[split], speakers, utts)
        return stats

    return build_corpus(out_dir, params, fill, lambda d: is_complete(d, params), tag="digits",
                        writer="espnet3.corpora.digits", marker=SPEAKER_INFO_NAME, force=force, log=log)


# --------------------------------------------------------------------------- CLI
def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet3.corpora.digits",
        description="Synthesise a spoken-digits corpus (Kaldi/ESPnet2 data dirs) with espeak-ng.",
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--num-train", type=non_negative_int, default=2000)
    parser.add_argument("--num-valid", type=non_negative_int, default=200)
    parser.add_argument("--num-test", type=non_negative_int, default=200)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--num-train-speakers", type=non_negative_int, default=MAX_SPEAKERS["train"],
                        help="synthetic training speakers (default: %(default)s)")
    parser.add_argument("--voices", default=",".join(DEFAULT_VOICES),
                        help="comma-separated espeak base voices shared by all splits")
    parser.add_argument("--workers", type=int, default=None, help="synthesis processes (default: min(4, cores))")
    parser.add_argument("--force", action="store_true", help="regenerate even if a matching corpus exists")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    voices = [v.strip() for v in args.voices.split(",") if v.strip()]
    try:
        generate_corpus(args.out, args.num_train, args.num_valid, args.num_test, args.seed,
                        voices=voices, num_train_speakers=args.num_train_speakers, workers=args.workers,
                        force=args.force)
    except (ValueError, TypeError, OSError) as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    # Re-import under the package name so that functions pickled for the spawned
    # workers are found as espnet3.corpora.digits.*, not __main__.*.
    from espnet3.corpora.digits import main as _main

    sys.exit(_main())
