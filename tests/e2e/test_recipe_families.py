"""egs2-style recipe configs of every task family convert (``python -m espnet3.from_espnet2``) and train.

The fixtures under ``fixtures/espnet2_configs/families/`` are written in the style of each family's
egs2 ``conf/`` files (scaled down). Each is converted with the run.sh options its template script
would get (``--recipe-args``), given the family's synthetic corpus the way a user points ``data:``
at theirs, and trained two steps in this process. Then one input per family that lacks data its
task needs must stop the launcher before Ray with the missing name and the fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from espnet3 import launch
from espnet3.from_espnet2 import convert, convert_file
from task_harness import TASK_CONFIGS, tiny_config, tiny_overrides, train_two_steps, with_corpus_of
from paths import FIXTURES

FIXTURES = FIXTURES / "espnet2_configs" / "families"
CONFIGS = sorted(FIXTURES.glob("*.yaml"))
# Families that train on another family's corpus: SLU on the spoken digits (text = the digits).
CORPUS_OF = {"slu1": "asr1"}
# What each family's run.sh passes its template script (as a user copying the recipe would).
RECIPE_ARGS = {
    "tts1": "--fs 16000 --n_shift 256 --token_type char --cleaner none --g2p none --feats_type raw",
    "gan_tts": "--fs 16000 --token_type char --feats_type raw",
    "enh1": "--fs 16k --feats_type raw --audio_format wav",
    "spk1": "--fs 16k --target_duration 1.5 --feats_type raw",
    "lid1": "--fs 16k --feats_type raw",
    "lm1": "--token_type word --ngpu 1",
    "mt1": "--src_lang en --tgt_lang es --src_token_type word --tgt_token_type word",
    "st1": "--src_lang en --tgt_lang es --src_token_type word --tgt_token_type word --feats_normalize utterance_mvn",
    "slu1": "--token_type word --feats_normalize utterance_mvn",
    "cls1": "--fs 16k --feats_normalize uttmvn",
    "codec1": "--fs 16000",
}


def family(path: Path) -> str:
    return path.name.split("__")[0]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> Path:
    """One tiny synthetic corpus per family, made by the first test that needs it."""
    return tmp_path_factory.mktemp("family_corpora")


def test_every_family_has_two_recipe_style_configs():
    counts = {name: sum(family(p) == name for p in CONFIGS) for name in RECIPE_ARGS}
    assert all(count >= 2 for count in counts.values()), counts


def _two_speaker_mixtures(enh: Path, out: Path) -> list:
    """wsj0_2mix-style data from the enhancement corpus: each clean utterance plus the next one."""
    import numpy as np
    import soundfile

    triples = {}
    for split in ("train", "valid"):
        utts = [line.split(maxsplit=1) for line in (enh / split / "spk1.scp").read_text().splitlines()]
        lines = {"wav.scp": [], "spk1.scp": [], "spk2.scp": []}
        for i, (utt, path) in enumerate(utts):
            a, rate = soundfile.read(path)
            b, _ = soundfile.read(utts[(i + 1) % len(utts)][1])
            n = min(len(a), len(b))
            for scp, audio in (("wav.scp", a[:n] + b[:n]), ("spk1.scp", a[:n]), ("spk2.scp", b[:n])):
                wav = out / split / scp.replace(".scp", "") / f"{utt}.wav"
                wav.parent.mkdir(parents=True, exist_ok=True)
                soundfile.write(wav, np.asarray(audio, dtype=np.float32), rate)
                lines[scp].append(f"{utt} {wav}")
        for scp, rows in lines.items():
            (out / split / scp).write_text("\n".join(rows) + "\n")
        triples[split] = [[str(out / split / scp), name, "sound"]
                          for scp, name in (("wav.scp", "speech_mix"), ("spk1.scp", "speech_ref1"),
                                            ("spk2.scp", "speech_ref2"))]
    return triples


def _converted(config: Path, root: Path, corpora: Path):
    name = family(config)
    out = root / "train.yaml"
    conversion = convert_file(config, out, name, recipe_args=RECIPE_ARGS[name])
    base = CORPUS_OF.get(name, name)
    spliced = with_corpus_of(out, name, root / "with_data.yaml", base)
    cfg = tiny_config(spliced, base, root, corpus=corpora / base)
    if (cfg.model.get("separator_conf") or {}).get("num_spk", 1) > 1:
        from espnet3.orchestration.preparation import make_corpus

        make_corpus(cfg)
        mixtures = _two_speaker_mixtures(Path(cfg.data.synth.dir), root / "mix")
        cfg.data.train, cfg.data.valid = mixtures["train"], mixtures["valid"]
        cfg.data.test = None
    return conversion, cfg


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_recipe_config_converts_and_trains_two_steps(config, tmp_path, corpora, monkeypatch):
    monkeypatch.chdir(tmp_path)
    conversion, cfg = _converted(config, tmp_path, corpora)
    plan, model, module, _ = train_two_steps(cfg)
    name = family(config)
    if str(cfg.model.get("normalize")) == "global_mvn":  # what tts.sh's collect_stats stage writes
        assert (Path(cfg.stats_dir) / "train" / "feats_stats.npz").is_file()
    if name in ("gan_tts", "codec1"):
        assert set(cfg.optimizers) == {"generator", "discriminator"}
    if name == "spk1":
        assert plan.preprocess.args["spk_num"] == 24, "spk_num is spk2utt's line count, as spk.sh passes it"
    if name == "cls1":
        tokens = Path(cfg.data.token_list).read_text().split()
        assert tokens[-2:] == ["<blank>", "<unk>"] and all(t.startswith("count_") for t in tokens[:-2])


def test_token_list_is_written_only_for_tasks_that_take_one():
    for name in ("enh1", "spk1", "lid1", "codec1"):
        config = yaml.safe_load(next(p for p in CONFIGS if family(p) == name).read_text())
        assert "token_list" not in convert(config, name).config["model"], name
    assert convert({"lm": "seq_rnn"}, "lm1").config["model"]["token_list"] == "${data.token_list}"


def test_tts_config_without_normalize_gets_tts_sh_global_mvn_and_its_stats_file():
    cfg = convert(yaml.safe_load((FIXTURES / "tts1__train_tacotron2.yaml").read_text()), "tts1").config
    assert cfg["model"]["normalize"] == "global_mvn"
    assert cfg["model"]["normalize_conf"] == {"stats_file": "${stats_dir}/train/feats_stats.npz"}


def test_pitch_and_energy_normalisation_read_their_own_stats_files():
    cfg = convert({"tts": "fastspeech2", "pitch_normalize": "global_mvn", "energy_normalize": "global_mvn"},
                  "tts1").config["model"]
    assert cfg["pitch_normalize_conf"] == {"stats_file": "${stats_dir}/train/pitch_stats.npz"}
    assert cfg["energy_normalize_conf"] == {"stats_file": "${stats_dir}/train/energy_stats.npz"}


def test_gan_optim_and_optim2_become_named_optimizers_in_turn_order():
    vits = convert(yaml.safe_load((FIXTURES / "gan_tts__train_vits.yaml").read_text()), "gan_tts").config
    assert vits["optimizer"] is None and vits["scheduler"] is None
    assert list(vits["optimizers"]) == ["discriminator", "generator"]  # generator_first: false
    assert vits["optimizers"]["generator"]["params"] == ["tts.generator"]
    assert vits["optimizers"]["discriminator"]["params"] == ["tts.discriminator"]
    assert vits["optimizers"]["generator"]["optimizer"]["_target_"] == "torch.optim.AdamW"
    assert "gradient_clip_val" not in vits["optimizers"]["generator"]  # grad_clip: -1
    assert vits["schedulers"]["discriminator"] == {
        "scheduler": {"_target_": "torch.optim.lr_scheduler.ExponentialLR", "gamma": 0.999875}, "interval": "epoch"}
    assert "gradient_clip_val" not in vits.get("trainer", {})
    first = convert(yaml.safe_load((FIXTURES / "gan_tts__train_vits_generator_first.yaml").read_text()),
                    "gan_tts").config
    assert list(first["optimizers"]) == ["generator", "discriminator"]
    assert first["optimizers"]["discriminator"]["gradient_clip_val"] == 1.0
    assert "schedulers" not in first
    codec = convert(yaml.safe_load((FIXTURES / "codec1__train_encodec_adamw.yaml").read_text()), "codec1").config
    assert codec["optimizers"]["generator"]["params"] == ["codec.generator"]
    assert list(codec["schedulers"]) == ["generator"]
    assert codec["preprocessor"] == {"_target_": "espnet3.systems.codec.preprocess.AudioChunks",
                                     "chunk_length": 8960, "hop_length": 320}


def test_recipe_options_newer_than_espnet_202511_survive_conversion():
    """vctk_noisy's dptfsnet separator, libritts soundstream's mel_loss_params.hop_length and TEMPLATE
    lm1's model_conf.eos_sym are carried into ``model:`` as the ESPnet2 config spells them."""
    enh = convert({"encoder": "conv", "decoder": "conv", "separator": "dptfsnet",
                   "separator_conf": {"num_spk": 1, "layer": 2, "unit": 16, "segment_size": 250}}, "enh1").config
    assert enh["model"]["separator"] == "dptfsnet"
    assert enh["model"]["separator_conf"] == {"num_spk": 1, "layer": 2, "unit": 16, "segment_size": 250}
    mel = {"n_fft": 1024, "hop_length": 256, "win_length": None, "window": "hann", "n_mels": 80}
    codec = convert({"codec": "soundstream", "codec_conf": {"mel_loss_params": mel}}, "codec1").config
    assert codec["model"]["codec_conf"]["mel_loss_params"] == mel
    soundstream = convert(yaml.safe_load((FIXTURES / "codec1__train_soundstream.yaml").read_text()), "codec1").config
    stft = soundstream["model"]["codec_conf"]["discriminator_params"]["complexstft_discriminator_params"]
    assert (stft["n_fft"], stft["hop_length"], stft["win_length"]) == (256, 64, 256)
    lm = convert(yaml.safe_load((FIXTURES / "lm1__train_lm_transformer_eos_sym.yaml").read_text()), "lm1").config
    assert lm["model"]["model"] == "lm_multitask"
    assert lm["model"]["model_conf"]["eos_sym"] == "<sos/eos>"
    assert lm["model"]["model_conf"]["sos_syms"] == ["<sos/eos>"]
    # The TEMPLATE conf itself has no `model:`; lm.sh's --lm_args gives it
    template = convert({"lm": "transformer", "model_conf": {"lsm_weight": 0.1, "eos_sym": "<sos/eos>"}}, "lm1",
                       "--token_type word --lm_args '--model lm_multitask'").config
    assert template["model"]["model"] == "lm_multitask"
    assert template["model"]["model_conf"] == {"lsm_weight": 0.1, "eos_sym": "<sos/eos>"}


def test_folded_batches_get_one_fold_length_per_data_stream_of_the_script():
    lm = convert(yaml.safe_load((FIXTURES / "lm1__train_lm_rnn.yaml").read_text()), "lm1")
    assert lm.config["dataloader"]["fold_length"] == [150]
    assert lm.config["data"]["train"] == [["data/train/lm_train.txt", "text", "text"]]
    enh = convert({"separator": "tcn", "separator_conf": {"num_spk": 2}, "batch_type": "folded"}, "enh1").config
    assert [t[1] for t in enh["data"]["train"]] == ["speech_mix", "speech_ref1", "speech_ref2"]
    assert enh["dataloader"]["fold_length"] == [80000, 80000, 80000]


def test_recipe_args_map_to_train_yaml_keys_and_the_rest_is_listed():
    conversion = convert({"tts": "tacotron2", "feats_extract": "fbank"}, "tts1",
                         "--fs 22050 --n_shift 256 --token_type phn --g2p g2p_en_no_space --cleaner tacotron "
                         "--feats_type raw --train_set tr_no_dev --bogus 3 --tts_args '--max_epoch 7'")
    cfg = conversion.config
    assert cfg["model"]["feats_extract_conf"] == {"fs": 22050, "hop_length": 256}
    assert cfg["data"]["token_type"] == "phn"
    assert cfg["preprocessor"] == {"g2p": "g2p_en_no_space", "cleaner": "tacotron"}
    assert cfg["trainer"]["max_epochs"] == 7
    assert set(conversion.unmapped) == {"--bogus"}
    assert any("--train_set" in note for note in conversion.notes)
    spk = convert({"encoder": "xvector"}, "spk1", "--fs 16k --target_duration 3.0").config
    assert spk["preprocessor"]["preprocessor_conf"] == {"sample_rate": 16000, "target_duration": 3.0}
    assert spk["model"]["spk2utt"] == "data/train/spk2utt"
    mt = convert({"encoder": "transformer"}, "mt1", "--src_lang de --tgt_lang en --src_token_type bpe").config
    assert mt["data"]["train"] == [["data/train/text.en", "text", "text"], ["data/train/text.de", "src_text", "text"]]
    assert mt["preprocessor"]["src_token_list"] == "${exp_dir}/src_tokens.txt"
    assert mt["preprocessor"]["src_bpemodel"] == "${exp_dir}/src_bpe.model"


def test_families_without_a_corpus_here_convert_and_build(tmp_path):
    """svs1, s2st1 and enh_asr1 have no synthetic corpus in this project: their configs convert and
    their models build."""
    from espnet3.config import load_config
    from espnet3.utils.task_utils import build_model

    tokens = tmp_path / "tokens.txt"
    tokens.write_text("<blank>\n<unk>\na\nb\n<sos/eos>\n")
    cases = {
        "svs1": {"svs": "naive_rnn_dp", "svs_conf": {"midi_dim": 129, "embed_dim": 32, "eprenet_conv_layers": 0,
                                                     "elayers": 1, "eunits": 32, "dlayers": 1, "dunits": 32,
                                                     "postnet_layers": 0}, "normalize": None,
                 "feats_extract": "fbank", "score_feats_extract": "syllable_score_feats"},
        "enh_asr1": {"enh_encoder": "conv", "enh_encoder_conf": {"channel": 16, "kernel_size": 8, "stride": 4},
                     "enh_decoder": "conv", "enh_decoder_conf": {"channel": 16, "kernel_size": 8, "stride": 4},
                     "enh_separator": "tcn", "enh_separator_conf": {"num_spk": 1, "layer": 2, "stack": 1,
                                                                    "bottleneck_dim": 16, "hidden_dim": 32},
                     "asr_encoder": "transformer", "asr_encoder_conf": {"output_size": 32, "num_blocks": 1},
                     "asr_decoder": "transformer", "asr_decoder_conf": {"num_blocks": 1}},
    }
    for name, espnet2 in cases.items():
        out = tmp_path / f"{name}.yaml"
        converted = convert(espnet2, name).config
        out.write_text(yaml.safe_dump(converted))
        overrides = [f"data.token_list={tokens}"] if "token_list" in converted["model"] else []
        if "src_token_list" in converted.get("preprocessor", {}):
            overrides += [f"preprocessor.src_token_list={tokens}", "+preprocessor.src_token_type=char",
                          "~preprocessor.src_bpemodel"]
        cfg = load_config(out, overrides)
        assert build_model(cfg) is not None, name


def _launch_without_ray(monkeypatch, config: dict, root: Path, *overrides: str) -> int:
    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for an input that should have failed before")

    monkeypatch.setattr("ray.init", no_ray)
    path = root / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return launch.main(["--config", str(path), "--num-gpus", "0", *overrides])


def _drop(config: dict, name: str) -> dict:
    for split in ("train", "valid"):
        config["data"][split] = [t for t in config["data"][split] if t[1] != name]
    return config


# One input per family that lacks data the task needs, and what the message must name.
MISSING = {
    "tts1": (lambda c: _drop(c, "speech"), ["`data.train`", "speech"]),
    "gan_tts": (lambda c: _drop(c, "speech"), ["`data.train`", "speech"]),
    # FastSpeech2 trains on a teacher's durations (tts.sh --teacher_dumpdir); TTS lists them as optional
    "tts1_fastspeech2": (lambda c: {**c, "model": {**c["model"], "tts": "fastspeech2",
                                                   "tts_conf": {"adim": 32, "aheads": 2}}},
                         ["`data.train`", "durations"]),
    "spk1": (lambda c: _drop(c, "spk_labels"), ["`data.train`", "spk_labels"]),
    "lid1": (lambda c: _drop(c, "lid_labels"), ["`data.train`", "lid_labels"]),
    "mt1": (lambda c: _drop(c, "src_text"), ["`data.train`", "src_text"]),
    "st1": (lambda c: _drop(c, "text"), ["`data.train`", "text"]),
    "cls1": (lambda c: _drop(c, "label"), ["`data.train`", "label"]),
    "codec1": (lambda c: {**c, "data": {**c["data"], **{s: [[t[0], "speech", t[2]] for t in c["data"][s]]
                                                        for s in ("train", "valid")}}}, ["`data.train`", "audio"]),
    # two-speaker separation on one-speaker data: ESPnet2 lists only speech_ref1 as required
    "enh1": (lambda c: {**c, "model": {**c["model"], "separator_conf": {**c["model"]["separator_conf"], "num_spk": 2}}},
             ["`data.train`", "speech_ref2"]),
    # asr.sh's two fold lengths on an LM's one text stream
    "lm1": (lambda c: {**c, "dataloader": {"batch_type": "folded", "batch_size": 8, "fold_length": [80000, 150]}},
            ["`dataloader.fold_length`", "1 data stream(s) (text)", "fold_length: [80000]"]),
    "slu1": (lambda c: {**c, "data": {**c["data"], "train": f"{c['data']['train']}_missing"}}, ["train_missing"]),
}


@pytest.mark.parametrize("name", sorted(MISSING))
def test_missing_data_of_each_family_stops_before_ray_naming_it(name, tmp_path, corpora, monkeypatch, capsys):
    base = CORPUS_OF.get(name, name.split("_fastspeech2")[0])
    config = yaml.safe_load((TASK_CONFIGS / f"{base}.yaml").read_text())
    if name == "slu1":
        config["task"] = "slu1"
    breaks, fragments = MISSING[name]
    config = breaks(config)
    overrides = [o for o in tiny_overrides(base, tmp_path, corpora / base) if not o.startswith("+trainer")]
    if base == "asr1" and name == "slu1":
        overrides = [o for o in overrides if not o.startswith("data.train=")]
    code = _launch_without_ray(monkeypatch, config, tmp_path, *overrides, "--stages", "train")
    err = capsys.readouterr().err
    assert code == 2, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert "Traceback" not in err
