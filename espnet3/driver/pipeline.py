"""The preparation a single run and a sweep share, in one order.

Everything that can fail on the launching machine fails before the cluster is joined: the data
(corpus, token list, the small splits' shapes), the model, its Lightning module and optimizers,
and the checkpoint criteria against what the model logs. Then the cluster, where the large
splits are measured and the feature statistics collected as Ray tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from espnet3.data.plan import DataPlan


def prepare(cfg: DictConfig, stages: Sequence[str], *, source: Path, config_dir: Path,
            connect: Callable[[], None] | None, on_stage: Callable[[str], None] = lambda stage: None) -> DataPlan:
    """The data plan of ``cfg`` for ``stages``, with the model checked and the cluster joined.

    ``connect`` joins (or starts) the cluster; ``None`` for stages that need none (packing reads
    files only), which then get the data plan alone. ``on_stage`` is told when a stage that runs
    here starts (``collect_stats``). ``cfg``'s criteria may be settled (a converted egs2 config drops
    one its model does not log, as ESPnet2 does).
    """
    from espnet3.driver.model_checks import check_trainable, settle_criteria
    from espnet3.driver.signals import stop_on_sigterm
    from espnet3.orchestration.preparation import prepare_data, splits_for, stats_model
    from espnet3.stages.collect_stats import collect_stats, model_config_for_stats
    from espnet3.utils.task_utils import build_model

    plan = prepare_data(cfg, stages)
    splits = splits_for(cfg, stages)
    # Small splits are measured here, before Ray starts, so that an item that cannot be
    # loaded is reported like any other data error; large ones below, as Ray tasks.
    plan.prepare_shapes(splits, parallel=False, defer_large=True)
    if connect is None:
        return plan

    def model():
        return build_model(cfg, config_dir, plan)

    # The model, its Lightning module and its optimizers are built once here, before Ray starts,
    # so that a bad model block is one clear error (ESPnet2's imports, the slow part, already
    # happened while the data was prepared). A model normalised with the statistics collect_stats
    # is about to write is checked without them first.
    pending_stats = "collect_stats" in stages
    factory, model_cfg = stats_model(cfg, plan)
    plain = OmegaConf.to_container(cfg, resolve=True)
    module = check_trainable(plain, (lambda: factory(model_config_for_stats(model_cfg))) if pending_stats else model,
                             source)
    if "train" in stages and settle_criteria(cfg, module, plan, source):
        plain = OmegaConf.to_container(cfg, resolve=True)
    connect()
    stop_on_sigterm()  # again: ray.init installed its own handler
    plan.prepare_shapes(splits, parallel=True)
    if pending_stats:
        on_stage("collect_stats")
        stats_dir = collect_stats(factory, model_cfg, plan)
        print(f"[espnet3] feature statistics -> {stats_dir}", flush=True)
        check_trainable(plain, model, source)
    return plan
