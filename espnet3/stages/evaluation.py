"""What the infer and measure stages need, parsed from a train.yaml once and checked before Ray starts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from espnet3.stages.infer import InferenceSpec
from espnet3.systems.base.inference import TrainedModel
from espnet3.systems.base.metric import Metric
from espnet3.systems.registry import System, system_for

INFER_DIR = "infer"


@dataclass(frozen=True)
class EvaluationPlan:
    """The decoder, its options, the model it loads, the metrics and where outputs go."""

    system: System
    inference: InferenceSpec
    model: TrainedModel
    metric_blocks: tuple[dict, ...]
    infer_dir: Path

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], averaged_model: Path) -> EvaluationPlan:
        """Check ``inference:`` against the task's decoder and ``metrics:`` entries; no file is read.

        Args:
            cfg: the resolved train.yaml (plain containers).
            averaged_model: the run's averaged model, decoded unless ``inference.model_file`` is set.
        """
        from espnet3.utils.task_utils import resolve_task

        if not cfg.get("task"):
            raise ValueError(
                "the infer and measure stages decode with an ESPnet2 task's inference class; a "
                "`model._target_` model has none: leave them out of --stages"
            )
        system = system_for(resolve_task(cfg["task"]))
        spec = InferenceSpec.from_config(cfg.get("inference"))
        system.inference_class().check_options(spec.options)
        blocks = tuple(cfg.get("metrics") or system.metrics)
        for i, block in enumerate(blocks):
            if not isinstance(block, Mapping) or "_target_" not in block:
                raise ValueError(f"`metrics[{i}]` must be a {{_target_: pkg.Metric, ...}} block, got {block!r}")
        exp_dir = Path(cfg["exp_dir"])
        return cls(
            system=system,
            inference=spec,
            model=TrainedModel(exp_dir / "config.yaml", spec.model_file or averaged_model),
            metric_blocks=blocks,
            infer_dir=exp_dir / INFER_DIR,
        )

    def metrics(self) -> list[Metric]:
        from espnet3.utils.instantiate import instantiate

        metrics = [instantiate(block) for block in self.metric_blocks]
        for block, metric in zip(self.metric_blocks, metrics):
            if not isinstance(metric, Metric):
                raise TypeError(f"metric {block['_target_']} is a {type(metric).__name__}, not an espnet3 Metric")
        return metrics

    def check_model(self) -> None:
        for path in (self.model.train_config, self.model.model_file):
            if not path.is_file():
                raise FileNotFoundError(f"No trained model at {path}; run the train stage first.")
