import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
from omegaconf import OmegaConf

from data_utils import write_datadir
from espnet3.data.checks import check_split
from espnet3.errors import DataError
from espnet3.data.sources import DataTriple, SplitSource
from espnet3.data.spec import DataSpec


def read_datadir(path):
    """Check a Kaldi directory given as the shorthand form, as the launcher does."""
    source = SplitSource.parse("data.train", str(path))
    check_split(source)
    return source.resolved()

UTTS = [("a", 1600, "ONE TWO"), ("b", 3200, "THREE"), ("c", 800, "NINE NINE")]


@pytest.fixture
def datadir(tmp_path):
    return write_datadir(tmp_path / "d", UTTS)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_shorthand_directory_reads_wav_scp_as_speech_and_text_as_text(datadir):
    d = read_datadir(datadir)
    assert d.triples == (
        DataTriple(datadir / "wav.scp", "speech", "sound"),
        DataTriple(datadir / "text", "text", "text"),
    )
    assert d.names == ("speech", "text")


def test_triples_in_list_and_espnet2_comma_form_parse_alike(datadir):
    as_lists = SplitSource.parse("data.train", [[str(datadir / "wav.scp"), "speech", "sound"],
                                                [str(datadir / "text"), "text", "text"]])
    as_strings = SplitSource.parse("data.train", [f"{datadir}/wav.scp,speech,sound", f"{datadir}/text,text,text"])
    assert as_lists == as_strings and as_lists.triples == read_datadir(datadir).triples
    check_split(as_lists)


def test_unknown_loader_type_suggests_the_closest_espnet2_type(datadir):
    with pytest.raises(DataError, match=r"`data.train\[0\]`: loader type `sond`.*did you mean `sound`"):
        SplitSource.parse("data.train", [[str(datadir / "wav.scp"), "speech", "sond"]])


def test_malformed_triples_and_duplicate_names_are_rejected(datadir):
    with pytest.raises(DataError, match=r"`data.valid\[1\]`.*\[path, name, type\] triple"):
        SplitSource.parse("data.valid", [[str(datadir / "wav.scp"), "speech", "sound"], ["text", "text"]])
    with pytest.raises(DataError, match="names the data key.*speech more than once"):
        SplitSource.parse("data.train", [[str(datadir / "wav.scp"), "speech", "sound"], [str(datadir / "text"), "speech", "text"]])
    with pytest.raises(DataError, match="mapping without `_target_`"):
        SplitSource.parse("data.train", {"path": "x"})


def test_numbers_that_do_not_parse_name_file_and_line(tmp_path, datadir):
    ints = tmp_path / "text_int"
    ints.write_text("a 1 2 3\nb 4 x\nc 5\n")
    source = SplitSource.parse("data.train", [[str(datadir / "wav.scp"), "speech", "sound"], [str(ints), "text", "text_int"]])
    with pytest.raises(DataError, match=re.escape(f"{ints}:2:") + ".*not integers"):
        check_split(source)


def test_zero_length_audio_is_rejected_with_its_line(datadir):
    soundfile.write(str(datadir / "wav" / "b.wav"), np.zeros(0, dtype=np.int16), 16000)
    with pytest.raises(DataError, match=re.escape(f"{datadir / 'wav.scp'}:2:") + ".*holds no samples"):
        read_datadir(datadir)


def test_missing_audio_file_names_wav_scp_line(datadir):
    (datadir / "wav" / "b.wav").unlink()
    with pytest.raises(DataError, match=re.escape(f"{datadir / 'wav.scp'}:2:") + ".*does not exist"):
        read_datadir(datadir)


def test_unreadable_audio_names_wav_scp_line(datadir):
    (datadir / "wav" / "c.wav").write_bytes(b"not audio")
    with pytest.raises(DataError, match=re.escape(f"{datadir / 'wav.scp'}:3:") + ".*cannot read audio file"):
        read_datadir(datadir)


def test_malformed_wav_scp_line_names_line_and_expected_format(datadir):
    lines = _lines(datadir / "wav.scp")
    lines[2] = "c\n"
    (datadir / "wav.scp").write_text("".join(lines))
    with pytest.raises(DataError, match=re.escape(f"{datadir / 'wav.scp'}:3:") + ".*expected '<utt_id> <path"):
        read_datadir(datadir)


def test_pipes_in_a_shorthand_wav_scp_read_through_kaldiio(datadir):
    lines = _lines(datadir / "wav.scp")
    lines[0] = f"a cat {datadir / 'wav' / 'a.wav'} |\n"
    (datadir / "wav.scp").write_text("".join(lines))
    assert read_datadir(datadir).triples[0].type == "kaldi_ark"


def test_pipe_under_the_sound_type_names_line_and_the_kaldi_ark_fix(datadir):
    lines = _lines(datadir / "wav.scp")
    lines[0] = "a sox foo.wav -t wav - |\n"
    (datadir / "wav.scp").write_text("".join(lines))
    source = SplitSource.parse("data.train", [[str(datadir / "wav.scp"), "speech", "sound"]])
    with pytest.raises(DataError, match=re.escape(f"{datadir / 'wav.scp'}:1:") + ".*kaldi_ark"):
        check_split(source)


def test_utterance_without_text_names_wav_scp_line(datadir):
    (datadir / "text").write_text("".join(_lines(datadir / "text")[:2]))
    with pytest.raises(DataError, match=re.escape(f"{datadir / 'wav.scp'}:3:") + ".*'c' has no line in .*text"):
        read_datadir(datadir)


def test_text_without_audio_names_text_line(datadir):
    with (datadir / "text").open("a") as f:
        f.write("zz EIGHT\n")
    with pytest.raises(DataError, match=re.escape(f"{datadir / 'text'}:4:") + ".*'zz' has no line in .*wav.scp"):
        read_datadir(datadir)


def test_duplicate_utterance_names_both_lines(datadir):
    with (datadir / "text").open("a") as f:
        f.write("a ONE\n")
    with pytest.raises(DataError, match=re.escape(f"{datadir / 'text'}:4:") + ".*repeats line 1"):
        read_datadir(datadir)


def test_utt2spk_gap_names_line(datadir):
    (datadir / "utt2spk").write_text("a spk0\nb spk1\n")
    with pytest.raises(DataError, match=re.escape(f"{datadir / 'wav.scp'}:3:") + ".*utt2spk"):
        read_datadir(datadir)


def test_mixed_sample_rates_and_stereo_are_rejected(datadir):
    soundfile.write(str(datadir / "wav" / "c.wav"), np.zeros(800, dtype=np.int16), 8000)
    with pytest.raises(DataError, match=re.escape(f"{datadir / 'wav.scp'}:3:") + ".*8000 Hz but line 1 is 16000 Hz"):
        read_datadir(datadir)
    soundfile.write(str(datadir / "wav" / "c.wav"), np.zeros((800, 2), dtype=np.int16), 16000)
    with pytest.raises(DataError, match="has 2 channel.*but line 1 has 1"):
        read_datadir(datadir)


def test_missing_directory_and_files_are_named(tmp_path, datadir):
    with pytest.raises(ValueError, match="does not exist"):
        read_datadir(tmp_path / "nope")
    (datadir / "text").unlink()
    with pytest.raises(DataError, match=re.escape(str(datadir / "text")) + " is missing"):
        read_datadir(datadir)


def test_data_spec_parses_resolved_omegaconf_and_names_bad_keys(tmp_path):
    cfg = OmegaConf.create(
        {
            "exp_dir": str(tmp_path),
            "data": {
                "train": "d/train",
                "valid": [["d/valid/wav.scp", "speech", "sound"]],
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
    assert spec.split("test").directory == Path("d/test") and spec.split("train").directory == Path("d/train")
    assert spec.split("valid").names == ("speech",)
    with pytest.raises(ValueError, match="unknown data split 'dev'"):
        spec.split("dev")
    with pytest.raises(ValueError, match="unknown key.*`data`: tokn_type"):
        DataSpec.from_config({"train": "a", "valid": "b", "token_list": "t", "tokn_type": "char"})
    with pytest.raises(ValueError, match="`data.token_type`"):
        DataSpec.from_config({"train": "a", "valid": "b", "token_list": "t", "token_type": "wordpiece"})
    with pytest.raises(ValueError, match="`data.valid` is required"):
        DataSpec.from_config({"train": "a", "token_list": "t"})
