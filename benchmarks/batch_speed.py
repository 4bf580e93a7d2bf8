"""Training speed on length-sorted numel batches vs random batches of the same sizes (one process, one thread).

    python -m benchmarks.batch_speed --config bench.yaml --batches 10 --out result.json

Random batches are built as in ``benchmarks/batching.py``: numel's batch sizes, utterances shuffled
across them. The same ``--batches`` batch indices are trained from both lists, alternating sorted
and random step by step (the order flips every pair), so both see the same model state and load.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    import lightning as L
    import numpy as np
    import torch

    from benchmarks.batching import main as padding_main
    from benchmarks.fixture import load_bench_config
    from espnet3.data.sampler import padding_fraction
    from espnet3.orchestration.preparation import prepare_data
    from espnet3.utils.task_utils import build_model

    torch.set_num_threads(1)
    cfg = load_bench_config(args.config, ["exp_dir=/tmp/unused"])
    bins = int(cfg.dataloader.batch_bins)
    padding = padding_main([str(cfg.data.train), "--batch-bins", str(bins)])
    plan = prepare_data(cfg, ["train"])
    dataset = plan.dataset("train")
    sorted_batches = plan.batches("train")
    shapes = plan.shapes("train")
    samples = {line.split()[0]: int(line.split()[1]) for line in shapes.files[0].read_text().splitlines()}
    utts = list(samples)
    order = [utts[i] for i in np.random.default_rng(0).permutation(len(utts))]
    random_batches, start = [], 0
    for batch in sorted_batches:
        random_batches.append(order[start : start + len(batch)])
        start += len(batch)
    count = min(args.batches, len(sorted_batches))
    chosen = np.linspace(0, len(sorted_batches) - 1, count).round().astype(int).tolist()

    L.seed_everything(int(cfg.seed), verbose=False)
    model = build_model(cfg, plan=plan)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=float(cfg.optimizer.lr))
    collate = plan.preprocess.collate_fn(train=True)
    totals = {"sorted": [0.0, 0], "random": [0.0, 0]}
    lists = {"sorted": sorted_batches, "random": random_batches}
    for step, index in enumerate(chosen):
        kinds = ("sorted", "random") if step % 2 == 0 else ("random", "sorted")
        for kind in kinds:
            batch = collate([dataset[i] for i in lists[kind][index]])
            begin = time.perf_counter()
            loss, _, _ = model(**batch[1])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            elapsed = time.perf_counter() - begin
            if step > 0:  # the first pair warms up allocators and kernels
                totals[kind][0] += elapsed
                totals[kind][1] += len(batch[0])
    result = {
        "padded_fraction_sorted": padding["sorted"],
        "padded_fraction_random": padding["random"],
        "measured_padded_fraction_sorted": padding_fraction([sorted_batches[i] for i in chosen], samples),
        "measured_padded_fraction_random": padding_fraction([random_batches[i] for i in chosen], samples),
        "utt_per_s_sorted": totals["sorted"][1] / totals["sorted"][0] if totals["sorted"][0] else None,
        "utt_per_s_random": totals["random"][1] / totals["random"][0] if totals["random"][0] else None,
        "batches_measured": max(count - 1, 0),
        "batch_bins": bins,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
