"""What egs2's template scripts (asr.sh, tts.sh, enh.sh, ...) add to a recipe's training config.

An ESPnet2 recipe trains with ``<family>.sh --<family>_config conf/train.yaml`` plus options of
its own in ``run.sh`` (``--fs``, ``--token_type``, ``--g2p``, ``--ref_num``, ...). The script turns
those into training arguments: the data streams (``--train_data_path_and_name_and_type``), their
fold lengths, the normalisation statistics of collect_stats, the token settings. espnet3's
converter (:mod:`espnet3.from_espnet2`) fills the same things from the tables here, so a
converted recipe trains as the script would have trained it.

Only facts of the scripts live here; how they become train.yaml keys is the converter's job.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Where collect_stats writes the statistics that `global_mvn` layers read (tts.sh / asr.sh do the same
# with --normalize_conf stats_file=${stats_dir}/train/feats_stats.npz).
STATS_FILES = {
    "normalize": "${stats_dir}/train/feats_stats.npz",
    "pitch_normalize": "${stats_dir}/train/pitch_stats.npz",
    "energy_normalize": "${stats_dir}/train/energy_stats.npz",
}
# feats_normalize spellings of the scripts -> ESPnet2's normalize choices.
NORMALIZE_NAMES = {"global_mvn": "global_mvn", "utterance_mvn": "utterance_mvn", "uttmvn": "utterance_mvn",
                   "none": None}


@dataclass(frozen=True)
class Stream:
    """One ``[file, name, type]`` the script passes for each split, and its default fold length."""

    file: str
    name: str
    type: str
    fold_length: int


@dataclass(frozen=True)
class RecipeScript:
    """One egs2 template script, as far as its training call goes.

    Attributes:
        name: the script (``tts.sh``), for messages.
        streams: the data it trains on, in the order it passes them (the first is the sort key).
        feats_normalize: the script's default ``--feats_normalize`` (``None``: it adds none).
        options: run.sh option -> where its value goes, as a dotted train.yaml key; ``None``
            marks options that only steer data preparation, inference or scoring.
        gan_params: for GAN tasks, the model attribute holding ``generator`` and ``discriminator``
            (what the task's ``build_optimizers`` hands to ``optim`` and ``optim2``).
        chunk_preprocessor: the espnet3 preprocessor that does what the script's ``iterator_type:
            chunk`` does (fixed-length training chunks).
    """

    name: str
    streams: tuple[Stream, ...]
    feats_normalize: str | None = None
    options: Mapping[str, str | None] = field(default_factory=dict)
    gan_params: str | None = None
    chunk_preprocessor: str | None = None


def _audio(file: str, name: str, fold: int = 80000) -> Stream:
    return Stream(file, name, "sound", fold)


def _text(file: str, name: str, fold: int = 150) -> Stream:
    return Stream(file, name, "text", fold)


# Options every script has that never change how a model trains.
NOT_TRAINING = (
    "stage", "stop_stage", "skip_data_prep", "skip_train", "skip_eval", "skip_upload", "skip_packing",
    "skip_upload_hf", "ngpu", "num_nodes", "nj", "inference_nj", "gpu_inference", "dumpdir", "expdir",
    "datadir", "python", "train_set", "valid_set", "test_sets", "local_data_opts", "audio_format",
    "min_wav_duration", "max_wav_duration", "inference_config", "inference_model", "inference_tag",
    "download_model", "hf_repo", "use_lightning", "lang", "srctexts", "lm_train_text", "bpe_train_text",
    "score_opts", "local_score_opts", "use_lm", "use_word_lm", "lm_config", "lm_exp", "write_collected_feats",
    "use_streaming", "dset", "scoring_protocol", "ref_channel", "inference_args", "text_classes",
    "output_all_probabilities", "speed_perturb_factors", "bpe_nlsyms", "bpe_char_cover",
    "bpe_input_sentence_size", "vocoder_file", "tag", "asr_config", "tts_config", "enh_config", "spk_config",
    "lid_config", "mt_config", "st_config", "slu_config", "cls_config", "codec_config", "svs_config",
    "s2st_config", "tts_task", "inference_batch_size", "extract_embd", "checkpoint_interval", "tsne_set",
    "max_utt_per_lang_for_tsne",
)
COMMON = {
    "token_type": "data.token_type",
    "nbpe": "data.nbpe",
    "cleaner": "preprocessor.cleaner",
    "g2p": "preprocessor.g2p",
    "nlsyms_txt": "preprocessor.non_linguistic_symbols",
    "feats_normalize": "model.normalize",
    "feats_type": "feats_type",
    "bpemode": "bpemode",
}
FRONTEND_FS = {"fs": "model.frontend_conf.fs"}
CROP = {"fs": "preprocessor.preprocessor_conf.sample_rate",
        "target_duration": "preprocessor.preprocessor_conf.target_duration"}
# tts.sh passes these to the feature extractor only when it is `fbank` (log-mel); a linear spectrogram
# (VITS) or extracted features take none of them.
FBANK_ONLY = ("fs", "n_mels", "fmin", "fmax")
TTS = {
    "fs": "model.feats_extract_conf.fs",
    "n_fft": "model.feats_extract_conf.n_fft",
    "n_shift": "model.feats_extract_conf.hop_length",
    "win_length": "model.feats_extract_conf.win_length",
    "n_mels": "model.feats_extract_conf.n_mels",
    "fmin": "model.feats_extract_conf.fmin",
    "fmax": "model.feats_extract_conf.fmax",
}
TRANSLATION = {
    "src_token_type": "preprocessor.src_token_type",
    "tgt_token_type": "data.token_type",
    "src_nbpe": "src_nbpe",
    "tgt_nbpe": "data.nbpe",
    "src_lang": "src_lang",
    "tgt_lang": "tgt_lang",
}

ASR = RecipeScript("asr.sh", (_audio("wav.scp", "speech"), _text("text", "text")), "global_mvn",
                   {**COMMON, **FRONTEND_FS})
TTS_SCRIPT = RecipeScript("tts.sh", (_text("text", "text"), _audio("wav.scp", "speech", 800 * 256)), "global_mvn",
                          {**COMMON, **TTS})
SCRIPTS: dict[str, RecipeScript] = {
    "asr1": ASR,
    "s2t1": ASR,
    "tts1": TTS_SCRIPT,
    "gan_tts": dataclasses.replace(TTS_SCRIPT, gan_params="tts"),
    "enh1": RecipeScript("enh.sh", (_audio("wav.scp", "speech_mix"), _audio("spk1.scp", "speech_ref1")), None,
                         {"fs": "preprocessor.sample_rate", "ref_num": "ref_num", "feats_type": "feats_type"}),
    "spk1": RecipeScript("spk.sh", (_audio("wav.scp", "speech", 120000), _text("utt2spk", "spk_labels", 1)), None,
                         {**CROP, "feats_type": "feats_type"}),
    "lid1": RecipeScript("lid.sh", (_audio("wav.scp", "speech", 120000), _text("utt2lang", "lid_labels", 1)), None,
                         {**CROP, "feats_type": "feats_type"}),
    "lm1": RecipeScript("lm.sh", (_text("lm_train.txt", "text"),), None, dict(COMMON)),
    "mt1": RecipeScript("mt.sh", (_text("text.${tgt_lang}", "text"), _text("text.${src_lang}", "src_text")), None,
                        {**COMMON, **TRANSLATION}),
    "st1": RecipeScript("st.sh", (_audio("wav.scp", "speech"), _text("text.${tgt_lang}", "text"),
                                  _text("text.${src_lang}", "src_text")), "global_mvn",
                        {**COMMON, **FRONTEND_FS, **TRANSLATION}),
    "slu1": RecipeScript("slu.sh", (_audio("wav.scp", "speech"), _text("text", "text"),
                                    _text("transcript", "transcript")), "global_mvn", {**COMMON, **FRONTEND_FS}),
    "cls1": RecipeScript("cls.sh", (_audio("wav.scp", "speech", 160000), _text("text", "label", 1)), "uttmvn",
                         {**FRONTEND_FS, "feats_normalize": "model.normalize"}),
    "codec1": RecipeScript("codec.sh", (_audio("wav.scp", "audio", 256000),), None,
                           {"fs": "model.codec_conf.sampling_rate", "feats_type": "feats_type"}, gan_params="codec",
                           chunk_preprocessor="espnet3.systems.codec.preprocess.AudioChunks"),
    "svs1": RecipeScript("svs.sh", (_text("text", "text"), _audio("wav.scp", "singing"),
                                    Stream("score.scp", "score", "score", 150), Stream("label", "label", "duration", 150)),
                         "global_mvn", {**COMMON, **TTS}),
    "s2st1": RecipeScript("s2st.sh", (_audio("wav.scp.${src_lang}", "src_speech"),
                                      _audio("wav.scp.${tgt_lang}", "tgt_speech")), None,
                          {**COMMON, **TRANSLATION, "fs": "model.frontend_conf.fs"}),
    "enh_asr1": RecipeScript("enh_asr.sh", (_audio("wav.scp", "speech"), _audio("spk1.scp", "speech_ref1"),
                                            _text("text_spk1", "text_spk1")), None,
                             {**COMMON, **FRONTEND_FS, "ref_num": "ref_num"}),
}


def script_for(task: str) -> RecipeScript | None:
    """The template script of a recipe name (``None`` for task class paths and unlisted families)."""
    return SCRIPTS.get(task)


def parse_recipe_args(text: str) -> dict[str, str]:
    """``"--fs 22050 --g2p g2p_en"`` (or ``--fs=22050``) -> ``{"fs": "22050", "g2p": "g2p_en"}``.

    Raises:
        ValueError: for a word that is not an option or an option without a value.
    """
    words = shlex.split(text)
    options: dict[str, str] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if not word.startswith("--"):
            raise ValueError(f"--recipe-args: {word!r} is not an option; expected `--name value` pairs as run.sh passes them")
        name, eq, value = word[2:].partition("=")
        if not eq:
            if i + 1 >= len(words):
                raise ValueError(f"--recipe-args: `--{name}` has no value")
            value = words[i + 1]
            i += 1
        options[name.replace("-", "_")] = value
        i += 1
    return options


def parse_fs(value: Any) -> int:
    """``16k`` / ``22050`` / ``24000.0`` -> samples per second, as the scripts' humanfriendly.parse_size."""
    text = str(value).strip().lower()
    scale = 1000 if text.endswith("k") else 1
    try:
        return int(float(text.rstrip("k")) * scale)
    except ValueError:
        raise ValueError(f"--fs {value!r} is not a sampling rate (e.g. 16000 or 16k)") from None
