"""The benchmark's data and train.yaml: generated once, shared by every side of every comparison."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parent.parent
MODELS = {"conformer": REPO / "configs" / "digits_asr.yaml", "tiny": REPO / "configs" / "tiny_asr.yaml"}

CONSTANT_SCHEDULER = {"_target_": "torch.optim.lr_scheduler.ConstantLR", "factor": 1.0, "total_iters": 0}
LEARNING_RATE = 0.002


@dataclass(frozen=True)
class Fixture:
    """Where the benchmark's corpus and train.yaml live."""

    data_dir: Path
    config: Path
    batch_bins: int


def make_fixture(
    work_dir: Path, data_dir: Path, model: str = "conformer", num_train: int = 600, batch_bins: int = 480_000,
) -> Fixture:
    """Generate the digits corpus (idempotent) and write ``bench_<model>.yaml`` into ``work_dir``.

    The model block is the named config's, unchanged except ``normalize: utterance_mvn``
    (``global_mvn`` would add a collect_stats stage the plain-Lightning side does not run).
    A constant-rate scheduler and no gradient clipping, so the plain side's forward/loss/Adam does the same
    arithmetic; validation is off (``limit_val_batches: 0``) except where a run overrides it.
    """
    from espnet3.corpora.digits import generate_corpus
    from espnet3.orchestration.preparation import prepare_data

    if model not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}; got {model!r}")
    data_dir, work_dir = Path(data_dir).resolve(), Path(work_dir).resolve()
    generate_corpus(data_dir, num_train=num_train, num_valid=8, num_test=0, seed=0)
    base = OmegaConf.load(MODELS[model])
    cfg = OmegaConf.create({
        "name": f"bench_{model}",
        "seed": 2026,
        "task": base.task,
        "data": {
            "train": str(data_dir / "train"),
            "valid": str(data_dir / "valid"),
            "token_list": str(data_dir / "tokens.txt"),
        },
        "dataloader": {"batch_type": "numel", "batch_bins": batch_bins},
        "model": OmegaConf.to_container(base.model, resolve=False),
        "optimizer": {"_target_": "torch.optim.Adam", "lr": LEARNING_RATE},
        # A scheduler block is mandatory; this one keeps the rate constant. The plain side uses the same.
        "scheduler": dict(CONSTANT_SCHEDULER),
        "trainer": {
            "max_epochs": 1000,
            "max_steps": 10,
            "limit_val_batches": 0,
            "num_sanity_val_steps": 0,
            "log_every_n_steps": 10,
        },
        "best_model_criterion": [["valid/loss", 1, "min"]],
    })
    cfg.model.normalize = "utterance_mvn"
    cfg.model.pop("normalize_conf", None)
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / f"bench_{model}.yaml"
    OmegaConf.save(cfg, path)
    prepare_data(load_bench_config(path, [f"exp_dir={work_dir / 'unused'}"]), ["train"])  # token list, shapes
    return Fixture(data_dir=data_dir, config=path, batch_bins=batch_bins)


def load_bench_config(config: Path, overrides: list[str] | None = None):
    """The benchmark train.yaml as espnet3 itself loads it (defaults, overrides, validation)."""
    from espnet3.config.loader import load_config
    from espnet3.orchestration.preparation import absolutize

    cfg = load_config(config, overrides or [])
    absolutize(cfg)
    return cfg
