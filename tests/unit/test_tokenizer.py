import pytest

from data_utils import write_datadir
from espnet3.data.spec import DataSpec
from espnet3.data.tokenizer import TextTokenizer, prepare_token_list, token_streams

TEXTS = ["ONE TWO THREE", "THREE THREE NINE", "ZERO ONE", "EIGHT SEVEN SIX FIVE FOUR", "TWO TWO"]


def _spec(tmp_path, token_type, **extra):
    """The `token_list` stream of a data section whose training text is TEXTS."""
    utts = [(f"u{k}", 800, t) for k, t in enumerate(TEXTS)]
    train = write_datadir(tmp_path / "train", utts)
    data = DataSpec.from_config(
        {
            "train": str(train),
            "valid": str(train),
            "token_type": token_type,
            "bpemodel": str(tmp_path / "bpe.model"),
            "token_list": str(tmp_path / "exp" / "tokens.txt"),
            **extra,
        }
    )
    (stream,) = token_streams(data.preprocessor_defaults(), data.train, data.nbpe)
    return stream


def test_streams_pair_each_token_list_with_its_training_text(tmp_path):
    spec = _spec(tmp_path, "char")
    assert spec.key == "token_list" and spec.text == tmp_path / "train" / "text"
    mt = token_streams(
        {"token_list": "t.txt", "src_token_list": "s.txt", "src_token_type": "word", "token_type": "char"},
        DataSpec.from_config({"train": [[str(spec.text), "src_text", "text"], [str(spec.text), "text", "text"]],
                              "valid": "v", "token_list": "t.txt"}).train,
        30,
    )
    assert [(s.key, s.token_type, s.text.name) for s in mt] == [("token_list", "char", "text"), ("src_token_list", "word", "text")]


def test_char_token_list_follows_espnet2_conventions(tmp_path):
    spec = _spec(tmp_path, "char")
    path = prepare_token_list(spec)
    tokens = path.read_text().splitlines()
    assert path == spec.token_list
    assert tokens[0] == "<blank>" and tokens[1] == "<unk>" and tokens[-1] == "<sos/eos>"
    assert "<space>" in tokens and " " not in tokens
    assert set(tokens[2:-1]) == set("".join(TEXTS).replace(" ", "")) | {"<space>"}
    # descending frequency: E is the most frequent character of the training text
    assert tokens[2] == "E"


def test_char_round_trip(tmp_path):
    spec = _spec(tmp_path, "char")
    prepare_token_list(spec)
    tok = TextTokenizer.from_stream(spec)
    ids = tok.encode("NINE ONE")
    assert ids.dtype.name == "int64"
    assert tok.token_list[ids[4]] == "<space>"
    assert tok.decode(ids) == "NINE ONE"
    assert tok.token_list[tok.encode("Q")[0]] == "<unk>"


def test_prepare_token_list_reuses_existing_file(tmp_path):
    spec = _spec(tmp_path, "char")
    spec.token_list.parent.mkdir(parents=True)
    spec.token_list.write_text("<blank>\n<unk>\nO\nN\nE\n<sos/eos>\n")
    assert prepare_token_list(spec).read_text() == "<blank>\n<unk>\nO\nN\nE\n<sos/eos>\n"
    assert TextTokenizer.from_stream(spec).encode("ONE").tolist() == [2, 3, 4]


def test_bpe_trains_model_and_round_trips(tmp_path):
    spec = _spec(tmp_path, "bpe", nbpe=25)
    prepare_token_list(spec)
    assert spec.bpemodel.is_file()
    tokens = spec.token_list.read_text().splitlines()
    assert tokens[:2] == ["<blank>", "<unk>"] and tokens[-1] == "<sos/eos>"
    tok = TextTokenizer.from_stream(spec)
    for text in TEXTS:
        ids = tok.encode(text)
        assert 1 not in ids.tolist()  # no <unk> for training text
        assert tok.decode(ids) == text
    mtime = spec.bpemodel.stat().st_mtime_ns
    prepare_token_list(spec)
    assert spec.bpemodel.stat().st_mtime_ns == mtime


def test_bpe_vocabulary_too_large_names_nbpe(tmp_path):
    spec = _spec(tmp_path, "bpe", nbpe=5000)
    with pytest.raises(ValueError, match="`data.nbpe: 5000`"):
        prepare_token_list(spec)


def test_existing_bpe_token_list_without_model_is_an_error(tmp_path):
    spec = _spec(tmp_path, "bpe", nbpe=25)
    spec.token_list.parent.mkdir(parents=True)
    spec.token_list.write_text("<blank>\n<unk>\n<sos/eos>\n")
    with pytest.raises(ValueError, match="bpemodel"):
        prepare_token_list(spec)
