"""The model alone: forward + backward + optimizer step on batches already on the device.

    python -m benchmarks.model_step --plan plan.json [--device cuda] [--steps 30] [--warmup 10]
    python -m benchmarks.model_step --config configs/digits_asr.yaml --sizes 16 64 256 [--device cuda]

With ``--plan`` it times the plan's rank-0 batches (read, collated and moved to the device
before timing), the floor under a training pipeline's step at the same batches. With ``--sizes``
it times random batches of N utterances of ``--samples`` samples (the default job's utterances
are ~30,000), for TF32 with foreach and with fused Adam: how the step scales with the batch
(launch-bound at small batches). Prints one JSON object; times are medians in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(model: torch.nn.Module, batches: list[dict], device: torch.device, steps: int, warmup: int,
               fused: bool = False) -> float:
    """Median milliseconds of forward + backward + Adam over ``steps`` steps after ``warmup`` ones."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, **({"fused": True} if fused else {}))
    times = []
    for index in range(warmup + steps):
        batch = batches[index % len(batches)]
        _sync(device)
        start = time.perf_counter()
        loss, _, _ = model(**batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if index >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def plan_batches(plan: dict, device: torch.device) -> list[dict]:
    from benchmarks.plain_ddp import PlannedBatches

    batches = []
    for _ids, tensors in (PlannedBatches(plan["batches"]["0"])[i] for i in range(len(plan["batches"]["0"]))):
        batches.append({k: v.to(device, non_blocking=True) for k, v in tensors.items()})
    return batches


def random_batches(size: int, samples: int, vocab: int, device: torch.device, count: int = 4) -> list[dict]:
    gen = torch.Generator().manual_seed(size)
    out = []
    for _ in range(count):
        text_len = 12
        out.append({
            "speech": (torch.randn(size, samples, generator=gen) * 0.1).to(device),
            "speech_lengths": torch.full((size,), samples, dtype=torch.long).to(device),
            "text": torch.randint(2, vocab - 1, (size, text_len), generator=gen).to(device),
            "text_lengths": torch.full((size,), text_len, dtype=torch.long).to(device),
        })
    return out


def model_from_config(config: Path, device: torch.device):
    """The config's ESPnet2 model with a character token list of the digit words (utterance MVN)."""
    from omegaconf import OmegaConf

    from espnet3.corpora.digits import DIGIT_WORDS
    from espnet3.utils.task_utils import build_task_model, task_args

    cfg = OmegaConf.to_container(OmegaConf.load(config), resolve=False)
    model_cfg = dict(cfg["model"])
    model_cfg["token_list"] = ["<blank>", "<unk>", *sorted(set("".join(DIGIT_WORDS))), "<space>", "<sos/eos>"]
    model_cfg["normalize"], model_cfg["normalize_conf"] = "utterance_mvn", {}  # no statistics needed
    model = build_task_model(cfg["task"], task_args(cfg["task"], model_cfg))
    return model.to(device), len(model_cfg["token_list"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path)
    parser.add_argument("--config", type=Path, default=Path("configs/digits_asr.yaml"))
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--samples", type=int, default=30000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # espnet3's GPU default (gpu.tf32)
    torch.manual_seed(0)
    result: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    if args.plan:
        from benchmarks.plain_ddp import build_model

        plan = json.loads(args.plan.read_text())
        model = build_model(plan).to(device)
        batches = plan_batches(plan, device)
        result["plan_step_ms"] = time_steps(model, batches, device, args.steps, args.warmup)
        result["utterances_per_batch"] = statistics.median(len(b["speech"]) for b in batches)
    for size in args.sizes or []:
        model, vocab = model_from_config(args.config, device)
        batches = random_batches(size, args.samples, vocab, device)
        row = {}
        for label, fused in (("foreach", False), ("fused", True)):
            ms = time_steps(model, batches, device, args.steps, args.warmup, fused=fused)
            row[label] = {"step_ms": ms, "utt_per_s": size / ms * 1000}
        result.setdefault("sizes", {})[str(size)] = row
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
