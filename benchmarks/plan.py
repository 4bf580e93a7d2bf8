"""The batch plan: exactly which utterances each rank trains on at each step, and how to build the model.

espnet3's data plan decides the batches (``DataPlan.dataloader``'s ``DistributedBatchSampler``, same
seed, epochs in order); the plan writes them out as JSON so that a plain-Lightning script, possibly
running in another Python environment with another ``espnet3`` package (upstream), trains on the
same batches and builds the same ESPnet2 model without importing this repository.
"""

from __future__ import annotations

import json
from pathlib import Path


def make_plan(cfg, world_size: int, max_steps: int, path: Path) -> Path:
    """Write the plan of ``max_steps`` steps for ``world_size`` ranks to ``path``."""
    from omegaconf import OmegaConf

    from espnet3.data.checks import read_table
    from espnet3.orchestration.preparation import prepare_data
    from espnet3.utils.task_utils import resolve_task

    plain = OmegaConf.to_container(cfg, resolve=True)
    task_cls = resolve_task(plain["task"])
    data = prepare_data(cfg, ["train"])
    wav_scp = next(t.path for t in data.source("train").triples if t.name == "speech")
    wavs, _ = read_table(wav_scp, "'<utt_id> <path>'", allow_empty_value=False)
    batches: dict[str, list] = {}
    for rank in range(world_size):
        loader = data.dataloader("train", rank=rank, world_size=world_size)
        dataset, sampler = loader.dataset, loader.batch_sampler
        steps: list = []
        epoch = 0
        while len(steps) < max_steps:
            sampler.set_epoch(epoch)
            for batch in sampler:
                steps.append([[utt, wavs[utt], dataset[utt][1]["text"].tolist()] for utt in batch])
                if len(steps) == max_steps:
                    break
            epoch += 1
        batches[str(rank)] = steps
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "task": f"{task_cls.__module__}.{task_cls.__qualname__}",
        "model_args": data.preprocess.args,
        "seed": int(plain["seed"]),
        "optimizer": plain["optimizer"],
        "scheduler": plain["scheduler"],
        "world_size": world_size,
        "batches": batches,
    }))
    return path
