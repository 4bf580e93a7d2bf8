"""``espnet3.systems.base.system.BaseSystem``: an egs3 recipe's stages, as upstream ESPnet3 declares them.

A system names its stages and the config role each reads (:class:`~espnet3.contract.stages.StageSpec`),
which is all ``run.py``'s :func:`espnet3.systems.launch.launch` needs: the stages that prepare files
run in the launching process (:mod:`espnet3.recipe.stages`), the rest on Ray Train workers through
the train.yaml the recipe's configs amount to (:mod:`espnet3.recipe.convert`). Subclass it with
``task`` set for a recipe of any ESPnet2 task, or with ``stages`` changed.
"""

from __future__ import annotations

from typing import ClassVar

from espnet3.contract.stages import StageSpec

# Upstream's stage names -> this project's Ray stages (python -m espnet3.launch --stages).
RAY_STAGES = {"collect_stats": "collect_stats", "train": "train", "infer": "infer", "measure": "measure",
              "pack_model": "pack"}
# Upstream stages that need the network (Hugging Face Hub) or a demo server.
ONLINE_STAGES = ("upload_model", "upload_demo", "pack_demo")


class BaseSystem:
    """The stages of a recipe; ``template`` names the ``egs3.TEMPLATE.<template>`` its configs merge over."""

    template: ClassVar[str] = "esp2_asr"
    stages: ClassVar[tuple[StageSpec, ...]] = (
        StageSpec(name="create_dataset", config="training", log_dir="data_dir"),
        StageSpec(name="collect_stats", config="training", log_dir="stats_dir"),
        StageSpec(name="train", config="training", log_dir="exp_dir"),
        StageSpec(name="infer", config="inference", log_dir="inference_dir"),
        StageSpec(name="measure", config="metrics", log_dir="inference_dir"),
        StageSpec(name="pack_model", config=("training", "publication")),
        StageSpec(name="upload_model", config="publication"),
        StageSpec(name="pack_demo", config="demo", log_dir="pack.out_dir"),
        StageSpec(name="upload_demo", config="demo", log_dir="pack.out_dir"),
    )

    @classmethod
    def stage_names(cls) -> list[str]:
        return [stage.name for stage in cls.stages]

    @classmethod
    def roles(cls) -> list[str]:
        """Every config role a stage of this system reads, in stage order."""
        seen: list[str] = []
        for stage in cls.stages:
            for role in stage.roles:
                if role not in seen:
                    seen.append(role)
        return seen

    @classmethod
    def stage(cls, name: str) -> StageSpec:
        return next(s for s in cls.stages if s.name == name)
