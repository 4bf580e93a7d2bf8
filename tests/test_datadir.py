import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
from omegaconf import OmegaConf

from data_utils import write_datadir
from espnet3.data.datadir import DataSpec, read_datadir

UTTS = [("a", 1600, "ONE TWO"), ("b", 3200, "THREE"), ("c", 800, "NINE NINE")]


@pytest.fixture
def datadir(tmp_path):
    return write_datadir(tmp_path / "d", UTTS)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_reads_utterances_texts_speakers_and_header_lengths(datadir):
    d = read_datadir(datadir)
    assert d.utt_ids == ["a", "b", "c"]
    assert d.text == {"a": "ONE TWO", "b": "THREE", "c": "NINE NINE"}
    assert d.num_samples == {"a": 1600, "b": 3200, "c": 800}
    assert d.sample_rate == 16000
    assert d.utt2spk == {"a": "spk0", "b": "spk1", "c": "spk0"}


def test_missing_audio_file_names_wav_scp_line(datadir):
    (datadir / "wav" / "b.wav").unlink()
    with pytest.raises(ValueError, match=re.escape(f"{datadir / 'wav.scp'}:2:") + ".*does not exist"):
        read_datadir(datadir)


def test_unreadable_audio_names_wav_scp_line(datadir):
    (datadir / "wav" / "c.wav").write_bytes(b"not audio")
    with pytest.raises(ValueError, match=re.escape(f"{datadir / 'wav.scp'}:3:") + ".*cannot read audio file"):
        read_datadir(datadir)


def test_malformed_wav_scp_line_names_line_and_expected_format(datadir):
    lines = _lines(datadir / "wav.scp")
    lines[2] = "c\n"
    (datadir / "wav.scp").write_text("".join(lines))
    with pytest.raises(ValueError, match=re.escape(f"{datadir / 'wav.scp'}:3:") + ".*expected '<utt_id> <path"):
        read_datadir(datadir)


def test_pipe_in_wav_scp_is_rejected_with_line(datadir):
    lines = _lines(datadir / "wav.scp")
    lines[0] = "a sox foo.wav -t wav - |\n"
    (datadir / "wav.scp").write_text("".join(lines))
    with pytest.raises(ValueError, match=re.escape(f"{datadir / 'wav.scp'}:1:") + ".*pipes"):
        read_datadir(datadir)


def test_utterance_without_text_names_wav_scp_line(datadir):
    (datadir / "text").write_text("".join(_lines(datadir / "text")[:2]))
    with pytest.raises(ValueError, match=re.escape(f"{datadir / 'wav.scp'}:3:") + ".*'c' has no line in .*text"):
        read_datadir(datadir)


def test_text_without_audio_names_text_line(datadir):
    with (datadir / "text").open("a") as f:
        f.write("zz EIGHT\n")
    with pytest.raises(ValueError, match=re.escape(f"{datadir / 'text'}:4:") + ".*'zz' has no line in .*wav.scp"):
        read_datadir(datadir)


def test_duplicate_utterance_names_both_lines(datadir):
    with (datadir / "text").open("a") as f:
        f.write("a ONE\n")
    with pytest.raises(ValueError, match=re.escape(f"{datadir / 'text'}:4:") + ".*repeats line 1"):
        read_datadir(datadir)


def test_utt2spk_gap_names_line(datadir):
    (datadir / "utt2spk").write_text("a spk0\nb spk1\n")
    with pytest.raises(ValueError, match=re.escape(f"{datadir / 'wav.scp'}:3:") + ".*utt2spk"):
        read_datadir(datadir)


def test_mixed_sample_rates_and_stereo_are_rejected(datadir):
    soundfile.write(str(datadir / "wav" / "c.wav"), np.zeros(800, dtype=np.int16), 8000)
    with pytest.raises(ValueError, match=re.escape(f"{datadir / 'wav.scp'}:3:") + ".*8000 Hz but line 1 is 16000 Hz"):
        read_datadir(datadir)
    soundfile.write(str(datadir / "wav" / "c.wav"), np.zeros((800, 2), dtype=np.int16), 16000)
    with pytest.raises(ValueError, match="2 channels; expected mono"):
        read_datadir(datadir)


def test_missing_directory_and_files_are_named(tmp_path, datadir):
    with pytest.raises(ValueError, match="does not exist"):
        read_datadir(tmp_path / "nope")
    (datadir / "text").unlink()
    with pytest.raises(ValueError, match=re.escape(str(datadir / "text")) + " is missing"):
        read_datadir(datadir)


def test_data_spec_parses_resolved_omegaconf_and_names_bad_keys(tmp_path):
    cfg = OmegaConf.create(
        {
            "exp_dir": str(tmp_path),
            "data": {
                "train": "d/train",
                "valid": "d/valid",
                "test": {"test": "d/test"},
                "token_type": "bpe",
                "nbpe": 20,
                "bpemodel": "${exp_dir}/bpe.model",
                "token_list": "${exp_dir}/tokens.txt",
                "digits": None,
            },
        }
    )
    spec = DataSpec.from_config(cfg.data)
    assert spec.bpemodel == tmp_path / "bpe.model" and spec.token_list == tmp_path / "tokens.txt"
    assert spec.split_dir("test") == Path("d/test") and spec.split_dir("train") == Path("d/train")
    with pytest.raises(ValueError, match="unknown data split 'dev'"):
        spec.split_dir("dev")
    with pytest.raises(ValueError, match="unknown key.*`data`: tokn_type"):
        DataSpec.from_config({"train": "a", "valid": "b", "token_list": "t", "tokn_type": "char"})
    with pytest.raises(ValueError, match="`data.token_type`"):
        DataSpec.from_config({"train": "a", "valid": "b", "token_list": "t", "token_type": "word"})
    with pytest.raises(ValueError, match="`data.valid` is required"):
        DataSpec.from_config({"train": "a", "token_list": "t"})
