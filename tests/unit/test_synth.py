"""Tests for the synthetic per-task corpora (espnet3.corpora.synth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from espnet3.corpora import digits, synth
from espnet3.corpora.digits import SPLITS, read_spk2info
from espnet3.corpora.synth import generate

# Tiny, but enough for every language / count class in train and for both trial labels.
SMALL = dict(num_train=10, num_valid=5, num_test=8)
COUNTS = dict(zip(SPLITS, (SMALL["num_train"], SMALL["num_valid"], SMALL["num_test"])))
CONTRACT = {
    "lm": ("text",),
    "mt": ("text.en", "text.es"),
    "st": ("wav.scp", "text.en", "text.es", "utt2spk", "spk2utt"),
    "tts": ("wav.scp", "text", "utt2spk", "spk2utt"),
    "enh": ("wav.scp", "spk1.scp", "noise1.scp", "utt2spk", "spk2utt", "utt2snr"),
    "lid": ("wav.scp", "text", "utt2lang", "utt2spk", "spk2utt", "lang2utt", "category2utt"),
    "spk": ("wav.scp", "utt2spk", "spk2utt", "text"),
    "cls": ("wav.scp", "label", "text", "utt2spk", "spk2utt"),
    "codec": ("wav.scp", "utt2spk", "spk2utt"),
}
# Files keyed by something other than an utterance id.
GROUPED = ("spk2utt", "lang2utt", "category2utt", "trial.scp", "trial2.scp", "trial_label")
LANGUAGE_WORDS = {
    "eng": {w.lower() for w in digits.DIGIT_WORDS} | {"oh"},
    **{language: set(words) for language, words in synth.DIGIT_WORDS.items()},
}


def _kv(path: Path) -> dict[str, str]:
    return dict(line.split(maxsplit=1) for line in path.read_text(encoding="utf-8").splitlines())


def _groups(path: Path) -> dict[str, list[str]]:
    return {k: v.split() for k, v in _kv(path).items()}


def _read(path: str | Path) -> np.ndarray:
    audio, sr = soundfile.read(path, dtype="int16")
    assert sr == 16000
    return audio


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """corpus(task) -> {split: dir}, generated once per module with seed 0."""
    cache: dict[str, dict[str, Path]] = {}

    def get(task: str) -> dict[str, Path]:
        if task not in cache:
            cache[task] = generate(task, tmp_path_factory.mktemp(task), seed=0, workers=2, verbose=False, **SMALL)
        return cache[task]

    return get


@pytest.mark.parametrize("task", synth.TASKS)
def test_contract_files_are_kaldi_sorted_and_describe_the_same_utterances(corpus, task):
    dirs = corpus(task)
    for split in SPLITS:
        d = dirs[split]
        names = CONTRACT[task] + (("trial.scp", "trial2.scp", "trial_label") if task == "spk" and split == "test"
                                  else ("category2utt",) if task == "spk" else ())
        utt_sets = []
        for name in names:
            keys = [line.split()[0] for line in (d / name).read_text(encoding="utf-8").splitlines()]
            assert keys == sorted(keys) and len(keys) == len(set(keys)), f"{task}/{split}/{name} not Kaldi-sorted"
            if name not in GROUPED:
                utt_sets.append(set(keys))
        assert all(s == utt_sets[0] for s in utt_sets) and len(utt_sets[0]) == COUNTS[split], (task, split)
        for name in names:
            if name.endswith(".scp"):
                for path in _kv(d / name).values():
                    assert Path(path).is_absolute() and Path(path).is_file() and Path(path).is_relative_to(d)
        if (d / "utt2spk").exists():
            inverse: dict[str, list[str]] = {}
            for utt, spk in _kv(d / "utt2spk").items():
                assert utt.startswith(spk + "_")
                inverse.setdefault(spk, []).append(utt)
            assert _groups(d / "spk2utt") == {k: sorted(v) for k, v in inverse.items()}


@pytest.mark.parametrize("task", synth.TEXT_TASKS)
def test_text_tasks_write_no_audio(corpus, task):
    dirs = corpus(task)
    root = dirs["train"].parent
    assert not list(root.rglob("*.wav")) and not list(root.rglob("*.scp"))


def test_lm_uses_the_digits_corpus_words(corpus):
    vocab = set(digits.DIGIT_WORDS) | {"OH"}
    for split in SPLITS:
        for words in _kv(corpus("lm")[split] / "text").values():
            assert 1 <= len(words.split()) <= digits.MAX_DIGITS and set(words.split()) <= vocab


@pytest.mark.parametrize("task", ["mt", "st"])
def test_spanish_target_translates_the_source_word_by_word(corpus, task):
    english = [w.lower() for w in digits.DIGIT_WORDS]
    to_spanish = dict(zip(english, synth.DIGIT_WORDS["spa"])) | {"oh": "cero"}
    for split in SPLITS:
        source, target = _kv(corpus(task)[split] / "text.en"), _kv(corpus(task)[split] / "text.es")
        for utt, words in source.items():
            assert target[utt].split() == [to_spanish[w] for w in words.split()]


def test_tts_speaks_with_one_fixed_voice_everywhere(corpus):
    infos = [read_spk2info(corpus("tts")[split]) for split in SPLITS]
    assert all(info == {synth.TTS_SPEAKER: synth.TTS_VOICE} for info in infos)


def test_enh_mixture_is_speech_plus_noise_at_the_logged_snr(corpus):
    checked = 0
    for split in SPLITS:
        d = corpus("enh")[split]
        mixture, speech, noise = _kv(d / "wav.scp"), _kv(d / "spk1.scp"), _kv(d / "noise1.scp")
        for utt, snr in _kv(d / "utt2snr").items():
            m, s, n = _read(mixture[utt]), _read(speech[utt]), _read(noise[utt])
            assert len(m) == len(s) == len(n)
            assert np.array_equal(m, np.clip(s.astype(np.int32) + n, -32768, 32767).astype(np.int16))
            assert synth.SNR_RANGE_DB[0] <= float(snr) <= synth.SNR_RANGE_DB[1]
            if np.abs(m.astype(np.int32)).max() < 32767:
                measured = 10 * np.log10(np.sum(s.astype(float) ** 2) / np.sum(n.astype(float) ** 2))
                assert abs(measured - float(snr)) < 0.1, utt
            checked += 1
    assert checked == sum(COUNTS.values())


def test_noise_kinds_have_their_spectral_tilt():
    rng = np.random.default_rng(0)
    spectra = {}
    for kind in synth.NOISE_KINDS:
        noise = synth.make_noise(kind, 32000, rng)
        assert np.sqrt(np.mean(noise**2)) == pytest.approx(1.0)
        power = np.abs(np.fft.rfft(noise)) ** 2
        freqs = np.fft.rfftfreq(len(noise), 1 / 16000)
        spectra[kind] = power[freqs >= 1000].sum() / power.sum()  # share above 1 kHz
    assert spectra["white"] > 0.8 > spectra["pink"] > spectra["brown"]
    assert spectra["hum"] < 1e-6, "hum is a few low harmonics of 50/60 Hz"


def test_mix_never_clips_and_keeps_the_snr():
    loud = (np.sin(np.arange(16000) / 5) * 32000).astype(np.int16)
    noise = synth.make_noise("white", len(loud), np.random.default_rng(1))
    s, n, m = synth.mix(loud, noise, -5.0)
    assert np.abs(m.astype(np.int32)).max() < 32767
    assert np.array_equal(m, s.astype(np.int32) + n)
    assert 10 * np.log10(np.sum(s.astype(float) ** 2) / np.sum(n.astype(float) ** 2)) == pytest.approx(-5.0, abs=0.01)


def test_lid_balances_languages_with_text_in_the_spoken_language(corpus):
    for split in SPLITS:
        d = corpus("lid")[split]
        utt2lang, text = _kv(d / "utt2lang"), _kv(d / "text")
        lang2utt = _groups(d / "lang2utt")
        assert (d / "lang2utt").read_bytes() == (d / "category2utt").read_bytes()
        assert sorted(u for utts in lang2utt.values() for u in utts) == sorted(utt2lang)
        assert all(utt2lang[u] == lang for lang, utts in lang2utt.items() for u in utts)
        for utt, lang in utt2lang.items():
            assert set(text[utt].split()) <= LANGUAGE_WORDS[lang], (utt, lang, text[utt])
        sizes = [len(utts) for utts in lang2utt.values()]
        assert max(sizes) - min(sizes) <= 1
    assert set(_groups(corpus("lid")["train"] / "lang2utt")) == set(synth.LID_VOICES)


def test_lid_speakers_use_their_language_voice_and_held_out_variants(corpus):
    variants = {}
    for split in SPLITS:
        d = corpus("lid")[split]
        info, utt2spk, utt2lang = read_spk2info(d), _kv(d / "utt2spk"), _kv(d / "utt2lang")
        for utt, spk in utt2spk.items():
            assert info[spk].voice == synth.LID_VOICES[utt2lang[utt]]
        variants[split] = {spec.variant for spec in info.values()}
    assert not variants["train"] & (variants["valid"] | variants["test"])


def test_spk_valid_is_closed_set_and_test_is_open_set(corpus):
    dirs = corpus("spk")
    speakers = {split: set(_kv(dirs[split] / "utt2spk").values()) for split in SPLITS}
    assert speakers["valid"] <= speakers["train"]
    assert not speakers["test"] & speakers["train"]
    assert not set(_kv(dirs["valid"] / "wav.scp")) & set(_kv(dirs["train"] / "wav.scp"))
    train_info, test_info = read_spk2info(dirs["train"]), read_spk2info(dirs["test"])
    assert not {(v.voice, v.variant) for v in train_info.values()} & {(v.voice, v.variant) for v in test_info.values()}
    for split in ("train", "valid"):
        assert (dirs[split] / "category2utt").read_bytes() == (dirs[split] / "spk2utt").read_bytes()


def test_spk_trials_pair_existing_test_wavs_with_correct_labels(corpus):
    d = corpus("spk")["test"]
    wav, utt2spk = _kv(d / "wav.scp"), _kv(d / "utt2spk")
    enroll, test, labels = _kv(d / "trial.scp"), _kv(d / "trial2.scp"), _kv(d / "trial_label")
    assert set(enroll) == set(test) == set(labels) and len(labels) == COUNTS["test"]
    assert list(labels.values()).count("1") == list(labels.values()).count("0") > 0
    for key, label in labels.items():
        a, b = key.split("*")
        assert enroll[key] == wav[a] and test[key] == wav[b] and Path(wav[a]).is_file() and Path(wav[b]).is_file()
        assert label == str(int(utt2spk[a] == utt2spk[b]))


def test_cls_label_is_the_number_of_spoken_digits(corpus):
    classes = []
    for split in SPLITS:
        d = corpus("cls")[split]
        text = _kv(d / "text")
        for utt, label in _kv(d / "label").items():
            assert label == f"count_{len(text[utt].split())}"
            classes.append(label)
        variants = {spec.variant for spec in read_spk2info(d).values()}
        assert variants <= set(digits.SPLIT_VARIANTS[split])
    train = list(_kv(corpus("cls")["train"] / "label").values())
    assert sorted(set(train)) == [f"count_{k}" for k in range(1, 6)] and max(map(train.count, set(train))) == 2


def test_same_seed_is_byte_identical_and_another_seed_differs(corpus, tmp_path):
    first = corpus("enh")
    again = generate("enh", tmp_path / "again", seed=0, workers=2, verbose=False, **SMALL)
    other = generate("enh", tmp_path / "other", seed=1, workers=2, verbose=False, **SMALL)
    for split in SPLITS:
        files_a = sorted(p.relative_to(first[split]) for p in first[split].rglob("*") if p.is_file())
        files_b = sorted(p.relative_to(again[split]) for p in again[split].rglob("*") if p.is_file())
        assert files_a == files_b
        for rel in files_a:
            a, b = (first[split] / rel).read_bytes(), (again[split] / rel).read_bytes()
            if rel.suffix == ".scp":  # absolute paths differ by root only
                a, b = a.replace(bytes(first[split]), b""), b.replace(bytes(again[split]), b"")
            assert a == b, (split, rel)
    assert (other["train"] / "utt2snr").read_bytes() != (first["train"] / "utt2snr").read_bytes()
    audio = [{p.read_bytes() for p in (c["train"] / "wav").iterdir()} for c in (first, other)]
    assert not audio[0] & audio[1]


def test_reuse_leaves_a_complete_corpus_untouched(corpus):
    dirs = corpus("codec")
    root = dirs["train"].parent

    def snapshot() -> dict[Path, tuple[int, int]]:
        return {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in root.rglob("*")
                if p.is_file() and not p.name.startswith(".corpus.lock")}

    before = snapshot()
    assert generate("codec", root, seed=0, verbose=False, **SMALL) == dirs
    assert snapshot() == before
    (dirs["valid"] / "spk2utt").unlink()
    assert not synth.is_complete(root, digits.read_manifest(root)["params"]), "a missing file invalidates reuse"


def test_text_task_regenerates_when_params_change(tmp_path):
    generate("lm", tmp_path, num_train=4, num_valid=1, num_test=1, verbose=False)
    first = (tmp_path / "train" / "text").read_text()
    generate("lm", tmp_path, num_train=4, num_valid=1, num_test=1, seed=5, verbose=False)
    assert (tmp_path / "train" / "text").read_text() != first
    assert digits.read_manifest(tmp_path)["params"]["seed"] == 5 and not list(tmp_path.glob(".*.partial"))


def test_bad_arguments_raise_before_touching_the_disk(tmp_path, capsys):
    out = tmp_path / "x"
    with pytest.raises(ValueError, match=r"unknown task 'asr'.*lm, mt, st, tts, enh, lid, spk, cls, codec"):
        generate("asr", out)
    with pytest.raises(TypeError, match="task"):
        generate(None, out)
    with pytest.raises(ValueError, match="num_train"):
        generate("lid", out, num_train=-1)
    with pytest.raises(TypeError, match="num_test"):
        generate("cls", out, num_test=1.5)
    with pytest.raises(ValueError, match="num_test"):
        generate("spk", out, num_test=3)
    with pytest.raises(ValueError, match="num_train"):
        generate("spk", out, num_train=0, num_valid=2)
    with pytest.raises(ValueError, match="workers"):
        generate("tts", out, workers=0)
    assert not out.exists()

    with pytest.raises(SystemExit) as exc:
        synth.main(["asr", "--out", str(out)])
    assert exc.value.code == 2 and "invalid choice: 'asr'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        synth.main(["lm", "--out", str(out), "--num-valid", "-2"])
    assert exc.value.code == 2 and "--num-valid" in capsys.readouterr().err


def test_refuses_to_delete_a_foreign_split_dir(tmp_path):
    (tmp_path / "valid").mkdir()
    (tmp_path / "valid" / "text").write_text("mine\n")
    with pytest.raises(FileExistsError, match="espnet3.corpora.synth"):
        generate("mt", tmp_path, num_train=2, num_valid=1, num_test=1, verbose=False)
    assert (tmp_path / "valid" / "text").read_text() == "mine\n"
