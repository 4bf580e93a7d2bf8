"""The infer stage (sharded, resumable, on Ray workers) and the measure stage, on a tiny ASR model."""

from __future__ import annotations

import json
import os

import pytest
import torch

from data_utils import TINY_ASR_MODEL, make_digits_dirs, train_config, write_datadir
from espnet3.data.plan import build_data_plan
from espnet3.export import save_model_pth, write_espnet2_config
from espnet3.stages.infer import STOP_AFTER_ENV, InferenceSpec, infer
from espnet3.stages.measure import format_table, measure
from espnet3.systems.asr.inference import ASRInference
from espnet3.systems.asr.metrics import CER, WER
from espnet3.systems.base.inference import TrainedModel
from espnet3.utils.task_utils import get_espnet_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A data plan with a 10-utterance test split and a random tiny ASR model exported as ESPnet2 files."""
    root = tmp_path_factory.mktemp("infer")
    dirs = make_digits_dirs(root, num_train=12, num_valid=4)
    dirs["test"] = write_datadir(root / "test", [(f"t{k:02d}", 1600 + 400 * k, "ONE TWO") for k in range(10)])
    cfg = {**train_config(root, dirs), "task": "asr1", "model": {**TINY_ASR_MODEL, "token_list": str(root / "tokens.txt")}}
    plan = build_data_plan(cfg)
    torch.manual_seed(0)
    model = get_espnet_model("asr1", cfg["model"])
    exp = root / "exp"
    write_espnet2_config(plan.preprocess, exp, seed=0)
    save_model_pth(model, exp / "model.pth")
    return plan, TrainedModel(exp / "config.yaml", exp / "model.pth")


def _lines(path):
    return path.read_text().splitlines()


def test_greedy_ctc_writes_espnet2_files_sorted_by_utterance(exported, tmp_path):
    plan, model = exported
    spec = InferenceSpec.from_config({"decoder": "greedy_ctc", "batch_size": 4, "shard_size": 3})
    out = infer(plan, ASRInference, model, spec, tmp_path, splits=["test"])["test"]
    for name in ("text", "token", "token_int", "score"):
        assert [line.split()[0] for line in _lines(out / name)] == [f"t{k:02d}" for k in range(10)]
    manifest = json.loads((out / "shards.json").read_text())
    assert manifest["shard_size"] == 3 and manifest["num_utterances"] == 10 and manifest["options"] == {
        "decoder": "greedy_ctc"}
    # how utterances are cut into shards changes nothing (batches are cut inside a shard)
    whole = InferenceSpec.from_config({"decoder": "greedy_ctc", "batch_size": 3, "shard_size": 12})
    one = infer(plan, ASRInference, model, whole, tmp_path / "one", splits=["test"])["test"]
    assert (one / "token_int").read_text() == (out / "token_int").read_text()


def test_beam_search_passes_its_options_to_speech2text(exported, tmp_path):
    plan, model = exported
    spec = InferenceSpec.from_config({"beam_size": 2, "ctc_weight": 0.5, "maxlenratio": 0.5, "shard_size": 5})
    out = infer(plan, ASRInference, model, spec, tmp_path, splits=["test"])["test"]
    assert len(_lines(out / "text")) == 10
    with pytest.raises(ValueError, match=r"`inference.beam_sise`.*did you mean `inference.beam_size`"):
        ASRInference.check_options({"beam_sise": 3})


def test_a_beam_wider_than_the_vocabulary_is_clipped_with_a_warning(exported, tmp_path):
    plan, model = exported
    vocabulary = len(plan.token_streams[0].token_list.read_text().split())
    spec = InferenceSpec.from_config({"beam_size": 500, "shard_size": 10})
    with pytest.warns(UserWarning, match=rf"beam_size 500 is wider than the {vocabulary}-token vocabulary"):
        out = infer(plan, ASRInference, model, spec, tmp_path, splits=["test"])["test"]
    assert len(_lines(out / "text")) == 10


def test_an_interrupted_infer_resumes_with_only_the_missing_shards(exported, tmp_path, monkeypatch, capsys):
    plan, model = exported
    spec = InferenceSpec.from_config({"decoder": "greedy_ctc", "shard_size": 2})
    monkeypatch.setenv(STOP_AFTER_ENV, "2")
    with pytest.raises(SystemExit):
        infer(plan, ASRInference, model, spec, tmp_path, splits=["test"])
    done = sorted(p.parent.name for p in (tmp_path / "test" / "shards").glob("*/done"))
    assert len(done) == 2 and not (tmp_path / "test" / "text").exists()
    stamps = {k: (tmp_path / "test" / "shards" / k / "text").stat().st_mtime_ns for k in done}
    monkeypatch.delenv(STOP_AFTER_ENV)
    capsys.readouterr()
    out = infer(plan, ASRInference, model, spec, tmp_path, splits=["test"])["test"]
    assert "10 utterances in 5 shards, 2 already done" in capsys.readouterr().out
    assert {k: (tmp_path / "test" / "shards" / k / "text").stat().st_mtime_ns for k in done} == stamps
    assert len(_lines(out / "text")) == 10


def test_shards_of_other_options_or_another_model_are_never_reused(exported, tmp_path, capsys):
    plan, model = exported
    greedy = InferenceSpec.from_config({"decoder": "greedy_ctc", "shard_size": 5})
    infer(plan, ASRInference, model, greedy, tmp_path, splits=["test"])
    beam = InferenceSpec.from_config({"beam_size": 2, "maxlenratio": 0.5, "shard_size": 5})
    capsys.readouterr()
    out = infer(plan, ASRInference, model, beam, tmp_path, splits=["test"])["test"]
    printed = capsys.readouterr().out
    assert "changed since" in printed and "2 shards, 0 already done" in printed
    assert json.loads((out / "shards.json").read_text())["options"] == {"beam_size": 2, "maxlenratio": 0.5}
    os.utime(model.model_file)  # a retrained model file
    infer(plan, ASRInference, model, beam, tmp_path, splits=["test"])
    assert "0 already done" in capsys.readouterr().out


def test_two_ray_workers_decode_what_one_process_decodes(exported, tmp_path, ray_cluster):
    plan, model = exported
    spec = InferenceSpec.from_config({"decoder": "greedy_ctc", "shard_size": 2})
    local = infer(plan, ASRInference, model, spec, tmp_path / "local", splits=["test"])["test"]
    ray_out = infer(plan, ASRInference, model, spec, tmp_path / "ray", splits=["test"], num_workers=2)["test"]
    assert (ray_out / "token_int").read_text() == (local / "token_int").read_text()
    logs = sorted(p.name for p in (tmp_path / "ray" / "logs").iterdir())
    assert logs == ["worker0.log", "worker1.log"], "each actor's output is kept in its log, off the console"


def test_measure_scores_each_split_and_writes_metrics_json(exported, tmp_path):
    plan, _ = exported
    out = tmp_path / "test"
    out.mkdir()
    (out / "text").write_text("".join(f"t{k:02d} {'ONE TWO' if k < 8 else 'ONE TOO'}\n" for k in range(10)))
    scores = measure(plan, [CER(), WER()], tmp_path, ["test"])
    assert scores["test"] == pytest.approx({"cer": 2 / 70, "wer": 2 / 20})  # one substitution each
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(scores["test"])
    assert "cer" in format_table(scores, "title") and "0.02857" in format_table(scores, "title")


def _score(metric, hyp, ref):
    return metric.score({"hyp": hyp, "ref": ref})


def test_error_rates_follow_espnet2_scoring():
    refs = {"a": "HELLO WORLD", "b": "ONE"}
    assert _score(CER(), {"a": "HELLO WORLD", "b": "ONE"}, refs) == {"cer": 0.0}
    assert _score(CER(), {"a": "HELLOWORLD", "b": "ONE"}, refs) == {"cer": pytest.approx(1 / 14)}  # the space counts
    assert _score(WER(), {"a": "HELLO", "b": "TWO"}, refs) == {"wer": pytest.approx(2 / 3)}
    # the cleaner runs on the reference only, as in asr.sh: "Mr. Smith paid 5" -> "MISTER SMITH PAID FIVE"
    cleaned = {"a": "MISTER SMITH PAID FIVE"}
    assert _score(WER(clean_types=["tacotron"]), cleaned, {"a": "Mr. Smith  paid 5"}) == {"wer": 0.0}
    assert _score(WER(), cleaned, {"a": "Mr. Smith  paid 5"}) == {"wer": 1.0}
    with pytest.raises(ValueError, match="1 utterance.*no hypothesis.*'b'"):
        _score(WER(), {"a": "HELLO"}, refs)


def test_metric_inputs_are_re_pointed_by_role_and_typos_are_named():
    metric = CER(hyp_key="text_greedy", ref_key="dataset:transcript")
    assert metric.inputs == {"hyp": "text_greedy", "ref": "dataset:transcript"}
    with pytest.raises(TypeError, match="takes no argument 'hyp_kye'; its inputs are hyp_key, ref_key"):
        CER(hyp_kye="text")
