"""Tests for the synthetic spoken-digits corpus (espnet3.corpora.digits / espeak)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from espnet3.corpora import digits
from espnet3.corpora.digits import SPLITS, generate_corpus, is_complete, plan_split, read_spk2info

SMALL = dict(num_train=20, num_valid=5, num_test=5)
VOCAB = set(digits.DIGIT_WORDS) | {"OH"}


def _kv(path: Path) -> dict[str, str]:
    return dict(line.split(maxsplit=1) for line in path.read_text().splitlines())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return generate_corpus(tmp_path_factory.mktemp("digits_seed0"), seed=0, verbose=False, **SMALL)


def test_same_seed_is_byte_identical(corpus, tmp_path):
    again = generate_corpus(tmp_path / "again", seed=0, verbose=False, **SMALL)
    for split in SPLITS:
        for name in ("text", "utt2spk", "spk2utt", "spk2info"):
            assert (corpus[split] / name).read_bytes() == (again[split] / name).read_bytes(), (split, name)
        wavs_a = sorted((corpus[split] / "wav").iterdir())
        wavs_b = sorted((again[split] / "wav").iterdir())
        assert [p.name for p in wavs_a] == [p.name for p in wavs_b]
        for a, b in zip(wavs_a, wavs_b):
            assert a.read_bytes() == b.read_bytes(), a.name


def test_split_speakers_and_voices_are_disjoint(corpus):
    speakers = {s: set(_kv(corpus[s] / "utt2spk").values()) for s in SPLITS}
    info = {s: read_spk2info(corpus[s]) for s in SPLITS}
    combos = {s: {(v.voice, v.variant) for v in info[s].values()} for s in SPLITS}
    variants = {s: {v.variant for v in info[s].values()} for s in SPLITS}
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        assert not speakers[a] & speakers[b]
        assert not combos[a] & combos[b]
        assert not variants[a] & variants[b], "valid/test must use held-out variants"
    for s in SPLITS:
        assert speakers[s] == set(info[s])
        for spec in info[s].values():
            assert digits.RATE_RANGE[0] <= spec.rate <= digits.RATE_RANGE[1]
            assert digits.PITCH_RANGE[0] <= spec.pitch <= digits.PITCH_RANGE[1]


def test_plan_holds_out_variants_at_scale():
    train, _ = plan_split("train", 2000, seed=3)
    for split in ("valid", "test"):
        held, _ = plan_split(split, 200, seed=3)
        assert not {v.variant for v in train.values()} & {v.variant for v in held.values()}


def test_num_train_speakers_spreads_train_only():
    """More training voices: every utterance count balanced over them, (voice, variant) pairs
    reused with their own prosody once the pool runs out; the default stays MAX_SPEAKERS."""
    train, utts = plan_split("train", 2000, seed=3, num_speakers=100)
    assert len(train) == 100 and {u.speaker_id for u in utts} == set(train)
    pool = len(digits.DEFAULT_VOICES) * len(digits.SPLIT_VARIANTS["train"])
    assert len({(v.voice, v.variant) for v in train.values()}) == pool < 100
    counts = np.bincount([sorted(train).index(u.speaker_id) for u in utts])
    assert counts.min() == counts.max() == 20
    assert len(plan_split("train", 2000, seed=3)[0]) == digits.MAX_SPEAKERS["train"]
    with pytest.raises(ValueError, match="num_train_speakers must be >= 1"):
        generate_corpus("/nonexistent", num_train_speakers=0, verbose=False)


def test_kaldi_files_are_consistent(corpus):
    for split, n in zip(SPLITS, (SMALL["num_train"], SMALL["num_valid"], SMALL["num_test"])):
        d = corpus[split]
        for name in ("wav.scp", "text", "utt2spk", "spk2utt"):
            keys = [line.split()[0] for line in (d / name).read_text().splitlines()]
            assert keys == sorted(keys) and len(keys) == len(set(keys)), f"{split}/{name} not Kaldi-sorted"
        wav_scp, text, utt2spk = _kv(d / "wav.scp"), _kv(d / "text"), _kv(d / "utt2spk")
        assert len(wav_scp) == n
        assert set(wav_scp) == set(text) == set(utt2spk)
        inverse: dict[str, list[str]] = {}
        for utt, spk in utt2spk.items():
            assert utt.startswith(spk + "_")
            inverse.setdefault(spk, []).append(utt)
        spk2utt = {k: v.split() for k, v in _kv(d / "spk2utt").items()}
        assert spk2utt == {k: sorted(v) for k, v in inverse.items()}
        for utt, words in text.items():
            ws = words.split()
            assert 1 <= len(ws) <= 7 and set(ws) <= VOCAB
            path = Path(wav_scp[utt])
            assert path.is_absolute() and path.is_file() and path.parent == d / "wav"


def test_audio_is_16k_int16_pcm(corpus):
    for split in SPLITS:
        for path in _kv(corpus[split] / "wav.scp").values():
            info = soundfile.info(path)
            assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
            audio, sr = soundfile.read(path, dtype="int16")
            assert sr == 16000 and audio.dtype == np.int16 and np.abs(audio).max() > 1000


def test_duration_grows_with_number_of_digits(corpus):
    lengths, durations = [], []
    for split in SPLITS:
        text, wav_scp = _kv(corpus[split] / "text"), _kv(corpus[split] / "wav.scp")
        for utt, words in text.items():
            lengths.append(len(words.split()))
            durations.append(soundfile.info(wav_scp[utt]).duration)
    lengths, durations = np.array(lengths), np.array(durations)
    assert np.corrcoef(lengths, durations)[0, 1] > 0.7
    assert durations[lengths <= 2].mean() < durations[lengths >= 6].mean()

    # Same speaker, 1 vs 7 digits, straight through the synthesiser.
    from espnet3.corpora.espeak import VoiceSpec, get_synthesizer

    synth = get_synthesizer()
    spec = VoiceSpec("en-us", "m3", pitch=50, rate=220, pitch_range=50)
    one = synth.synthesize_16k("seven", spec)
    seven = synth.synthesize_16k("seven one four one five nine two", spec)
    assert one.dtype == np.int16 and len(seven) > 3 * len(one)


def test_manifest_reuse_and_regeneration(corpus, tmp_path):
    out = tmp_path / "reuse"
    generate_corpus(out, seed=0, verbose=False, **SMALL)

    def snapshot() -> dict[Path, tuple[int, int]]:
        # The lock file is the one thing a reuse may touch.
        return {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in out.rglob("*")
                if p.is_file() and not p.name.startswith(".corpus.lock")}

    before = snapshot()
    generate_corpus(out, seed=0, verbose=False, **SMALL)
    assert snapshot() == before

    params = json.loads((out / digits.MANIFEST_NAME).read_text())["params"]
    assert params["seed"] == 0 and is_complete(out, params)
    victim = next((out / "valid" / "wav").iterdir())
    victim.unlink()
    assert not is_complete(out, params), "a missing wav must invalidate the manifest"

    # Different parameters regenerate in place, and a different seed gives other data.
    generate_corpus(out, seed=1, verbose=False, **SMALL)
    assert json.loads((out / digits.MANIFEST_NAME).read_text())["params"]["seed"] == 1
    assert (out / "train" / "text").read_text() != (corpus["train"] / "text").read_text()
    assert len(list((out / "valid" / "wav").iterdir())) == SMALL["num_valid"]
    assert not list(out.glob(".*.partial"))


def test_bad_inputs_raise_clear_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="num_train"):
        generate_corpus(tmp_path / "x", num_train=-1, verbose=False)
    with pytest.raises(TypeError, match="num_valid"):
        generate_corpus(tmp_path / "x", num_valid=2.5, verbose=False)
    with pytest.raises(ValueError, match=r"unknown espeak voice 'en-gb'.*en-us"):
        generate_corpus(tmp_path / "x", voices=["en-gb"], verbose=False, **SMALL)
    with pytest.raises(ValueError, match="held-out"):
        generate_corpus(tmp_path / "x", voices=["en-us+m3"], verbose=False, **SMALL)

    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match=str(blocker / "sub")):
        generate_corpus(blocker / "sub", verbose=False, **SMALL)
    assert not (tmp_path / "x").exists(), "validation must happen before touching the disk"

    with pytest.raises(SystemExit) as exc:
        digits.main(["--out", str(tmp_path / "y"), "--num-train", "-3"])
    assert exc.value.code == 2 and "--num-train" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        digits.main(["--out", str(tmp_path / "y"), "--voices", "xx-nonexistent"])
    assert exc.value.code == 2 and "unknown espeak voice 'xx-nonexistent'" in capsys.readouterr().err


def test_refuses_to_delete_foreign_split_dir(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing"):
        generate_corpus(tmp_path, num_train=2, num_valid=1, num_test=1, verbose=False)
    assert (tmp_path / "train" / "precious.txt").read_text() == "keep me"
