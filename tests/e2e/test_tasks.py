"""Every task family in configs/tasks/: its corpus, data plan, two training steps, infer and measure.

Each shipped config runs at tiny size in this process (no Ray: the launcher's Ray path is covered
by tests/e2e/test_launch.py), through the same pieces the launcher uses: the synthetic corpus, the
data plan (ESPnet2 dataset, task preprocessor, samplers, collate), collect_stats where the config
normalises with global_mvn, ESPnetLightningModule under Lightning, the ESPnet2 export, the task's
inference class and its metrics.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from espnet3.export import save_model_pth, write_espnet2_config
from espnet3.stages.evaluation import EvaluationPlan
from espnet3.stages.infer import infer
from espnet3.stages.measure import measure
from task_harness import TASK_CONFIGS, tiny_config, train_two_steps

CONFIGS = TASK_CONFIGS
# The metrics each family reports (None: not measurable at this size, e.g. no ASR model for TTS).
METRICS = {
    "asr1": {"cer", "wer"},
    "lm1": {"ppl"},
    "mt1": {"bleu", "chrf"},
    "st1": {"bleu", "chrf"},
    "cls1": {"accuracy"},
    "lid1": {"accuracy"},
    "spk1": {"eer", "min_dcf"},
    "enh1": {"si_snr", "si_snr_mix", "sdr", "sdr_mix", "si_snr_improvement", "sdr_improvement"},
    "tts1": {"mcd", "intelligibility_cer"},
    "gan_tts": {"mcd", "intelligibility_cer"},
    "codec1": {"si_snr", "mcd"},
}


def test_every_shipped_task_config_is_covered():
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(METRICS)


def _tiny_config(task: str, root: Path):
    extra = ["inference.shard_size=4"]
    if task == "spk1":
        extra.append("model.spk_num=24")  # the tiny corpus: 24 speakers, one training utterance each
    if task in ("tts1", "gan_tts"):  # no ASR run here: IntelligibilityCER reports null instead of failing
        extra.append(f"metrics.1.asr_exp_dir={root}/no_asr")
    return tiny_config(CONFIGS / f"{task}.yaml", task, root, *extra)


@pytest.mark.parametrize("task", sorted(METRICS))
def test_task_config_trains_two_steps_then_infers_and_measures(task, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths in the configs' model blocks resolve here
    cfg = _tiny_config(task, tmp_path)
    plan, model, _, _ = train_two_steps(cfg)
    if task == "spk1":
        assert len((Path(cfg.data.synth.dir) / "train" / "spk2utt").read_text().splitlines()) == 24

    exp = Path(cfg.exp_dir)
    write_espnet2_config(plan.preprocess, exp, seed=int(cfg.seed))
    save_model_pth(model, exp / "model.pth")
    evaluation = EvaluationPlan.from_config(OmegaConf.to_container(cfg, resolve=True), exp / "model.pth")
    infer(plan, evaluation.system.inference_class(), evaluation.model, evaluation.inference,
          evaluation.infer_dir, splits=["test"])
    tts = task in ("tts1", "gan_tts")
    with pytest.warns(UserWarning, match="IntelligibilityCER needs a trained ASR") if tts else nullcontext():
        metrics = evaluation.metrics()
    scores = measure(plan, metrics, evaluation.infer_dir, ["test"])["test"]
    assert set(scores) == METRICS[task]
    for name, value in scores.items():
        if tts and name == "intelligibility_cer":
            assert value is None
        else:
            assert isinstance(value, float) and math.isfinite(value), (name, value)
