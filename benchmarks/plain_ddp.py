"""The reference side: plain Lightning DDP (Lightning's own launcher, no Ray) over a batch plan.

    python -m benchmarks.plain_ddp --plan plan.json --out O [--devices 2] [--accelerator cpu|gpu] [--module plain|espnet3|upstream] [--toy-model]

``--module plain`` trains an equivalent minimal LightningModule (forward, loss, Adam, the plan's
scheduler); ``--module espnet3`` trains this repository's ``ESPnetLightningModule`` under the same
plain Lightning DDP (the module's own cost, without Ray); ``--module upstream`` trains upstream
ESPnet3's ``ESPnetLightningModule`` (espnet >= 202609, run this file with that environment's Python).
Imports nothing from this repository's ``espnet3`` except for ``--module espnet3``, so it runs in
either environment. Writes ``O/rank<r>.json`` through :class:`benchmarks.probes.StepTimer`.
"""

from __future__ import annotations

import time

T_MAIN = time.time()

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

import lightning as L  # noqa: E402
import numpy as np  # noqa: E402
import soundfile  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from benchmarks.probes import StepTimer  # noqa: E402


def offline_nltk() -> None:
    """As espnet3 does: espnet2's ASR task imports g2p_en, which calls nltk.download at import time."""
    try:
        import nltk
    except ImportError:
        return
    nltk.download = lambda *args, **kwargs: False


def import_object(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def instantiate(spec: dict, **kwargs):
    spec = dict(spec)
    return import_object(spec.pop("_target_"))(**spec, **kwargs)


class PlannedBatches(Dataset):
    """One item per step: this rank's batch of the plan, read and collated as espnet3 does."""

    def __init__(self, steps: list):
        from espnet2.train.collate_fn import CommonCollateFn

        self.steps = steps
        self.collate = CommonCollateFn(float_pad_value=0.0, int_pad_value=-1)

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, index: int):
        items = []
        for utt, wav, tokens in self.steps[index]:
            speech, _ = soundfile.read(wav, dtype="float32")
            items.append((utt, {"speech": speech, "text": np.asarray(tokens, dtype=np.int64)}))
        return self.collate(items)


class PlainASRModule(L.LightningModule):
    """What a user would write by hand: forward, loss, Adam."""

    def __init__(self, model: torch.nn.Module, plan: dict):
        super().__init__()
        self.model = model
        self.plan = plan

    def training_step(self, batch, batch_idx):
        loss, _stats, _weight = self.model(**batch[1])
        return loss

    def configure_optimizers(self):
        optimizer = instantiate(self.plan["optimizer"], params=self.model.parameters())
        scheduler = instantiate(self.plan["scheduler"], optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class ToyASR(torch.nn.Module):
    """An ESPnet2-shaped model whose step takes a few milliseconds: ``loss, stats, weight`` from
    ``speech``/``text`` like ESPnet2's ASR model (4 stats), but only an MLP over the first 0.1 s of
    audio predicting the first token. With so little arithmetic, any fixed per-step cost of the
    module around it (logging, checks, the consensus) shows."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.hidden = torch.nn.Linear(160, 64)
        self.out = torch.nn.Linear(64, vocab_size)

    def forward(self, speech, speech_lengths, text, text_lengths):
        frames = speech[:, :1600].reshape(len(speech), 10, 160)
        logits = self.out(torch.tanh(self.hidden(frames)).mean(1))
        target = text[:, 0]
        loss = torch.nn.functional.cross_entropy(logits, target)
        acc = (logits.argmax(-1) == target).float().mean()
        stats = {"loss": loss.detach(), "loss_att": loss.detach(), "loss_ctc": None, "acc": acc, "cer": None}
        return loss, stats, torch.tensor(float(len(speech)))


def build_model(plan: dict, toy: bool = False) -> torch.nn.Module:
    if toy:
        vocab = 1 + max(t for steps in plan["batches"].values() for step in steps for *_, tokens in step for t in tokens)
        return ToyASR(vocab)
    task = plan["task"]
    if not task.startswith("espnet2."):
        task = "espnet2.tasks.asr.ASRTask"  # this repository's ASR task is ESPnet2's under another name
    return import_object(task).build_model(argparse.Namespace(**plan["model_args"]))


def build_module(kind: str, model: torch.nn.Module, plan: dict) -> L.LightningModule:
    if kind == "plain":
        return PlainASRModule(model, plan)
    from omegaconf import OmegaConf

    # Both espnet3s keep the module at this import path (upstream's, mirrored here); their configs differ.
    module_cls = import_object("espnet3.components.modeling.lightning_module.ESPnetLightningModule")
    config = {"optimizer": plan["optimizer"], "scheduler": plan["scheduler"], "scheduler_interval": "step"}
    if kind == "upstream":
        config["num_device"] = 1
    return module_cls(model, OmegaConf.create(config))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--module", choices=("plain", "espnet3", "upstream"), default="plain")
    parser.add_argument("--toy-model", action="store_true", help="train ToyASR (a few-ms step) instead of the plan's model")
    parser.add_argument("--t0", type=float, default=None, help="wall clock at process start (from the parent)")
    args = parser.parse_args(argv)
    marks = {"process_start": args.t0 or T_MAIN, "main": T_MAIN, "imports_done": time.time()}
    torch.set_num_threads(1)
    if args.accelerator == "gpu":  # as espnet3's GPU workers do (gpu.tf32), and as Lightning advises
        torch.set_float32_matmul_precision("high")
    offline_nltk()
    plan = json.loads(args.plan.read_text())
    if plan["world_size"] != args.devices:
        raise ValueError(f"{args.plan} is a plan for {plan['world_size']} ranks, not --devices {args.devices}")
    L.seed_everything(plan["seed"], workers=True, verbose=False)
    marks["model_build_start"] = time.time()
    model = build_model(plan, toy=args.toy_model)
    marks["model_build_end"] = time.time()
    module = build_module(args.module, model, plan)
    max_steps = len(plan["batches"]["0"])
    marks["trainer_init"] = time.time()
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        max_steps=max_steps,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[StepTimer(str(args.out.resolve()), marks=marks)],
    )
    # Lightning starts the other ranks inside fit(); each builds its own loader from its rank.
    rank = int(os.environ.get("LOCAL_RANK", 0))
    loader = DataLoader(PlannedBatches(plan["batches"][str(rank)]), batch_size=None, shuffle=False)
    trainer.fit(module, train_dataloaders=loader)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
