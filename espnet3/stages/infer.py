"""The infer stage: decode every test split with the task's ESPnet2 inference class, on Ray workers.

Each split's utterances are cut into shards (longest first, so workers finish together). Ray
actors (one GPU each when the cluster has GPUs) build the inference object once and decode whole
shards; the driver writes each shard as it arrives, under ``<split>/shards/<k>/``, and marks it
done last. A killed run leaves every finished shard in place: run ``infer`` again and only the
missing shards are decoded. When all are done they are merged into ESPnet2's files
(``<split>/text``, ``token``, ``score``, ``wav.scp`` + ``wav/*.wav``, ...), sorted by utterance.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from espnet3.data.plan import DataPlan
from espnet3.systems.base.inference import Inference, Output, TrainedModel
from espnet3 import storage
from espnet3.storage import atomic_save, atomic_write, atomic_write_json

DONE = "done"
MANIFEST = "shards.json"  # what the shards were decoded from (see _manifest)
LOG_DIR = "logs"  # <infer dir>/logs/worker<i>.log: what each inference actor printed
# Test hook: stop the driver (as a crash would) once this many shards were written.
STOP_AFTER_ENV = "ESPNET3_INFER_STOP_AFTER"
_OWN_KEYS = ("model_file", "num_workers", "shard_size", "batch_size", "device")


@dataclass(frozen=True)
class InferenceSpec:
    """The parsed ``inference:`` section.

    Attributes:
        model_file: the model to decode with; default the run's averaged model
            (``best_model_criterion[0]``).
        num_workers: Ray workers decoding in parallel; default as many as the run's training
            workers (``--num-gpus`` GPU workers, else ``--num-workers`` CPU workers).
        shard_size: utterances per shard (the unit that is resumed).
        batch_size: utterances per inference call, where the task's decoder batches.
        device: ``auto`` (a GPU when the worker has one), ``cpu`` or ``cuda``.
        options: everything else: keyword arguments of the task's ESPnet2 inference class
            (``beam_size``, ``ctc_weight``, ``lm_weight``, ``nbest``, ...) or of its wrapper.
    """

    model_file: Path | None = None
    num_workers: int | None = None
    shard_size: int = 16
    batch_size: int = 1
    device: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("shard_size", "batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`inference.{key}` must be an integer >= 1, got {value!r}")
        if self.num_workers is not None and (
            isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 1
        ):
            raise ValueError(f"`inference.num_workers` must be an integer >= 1 or null, got {self.num_workers!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"`inference.device` must be auto, cpu or cuda, got {self.device!r}")

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> InferenceSpec:
        raw = dict(section or {})
        own = {k: raw.pop(k) for k in _OWN_KEYS if k in raw}
        if own.get("model_file") is not None:
            own["model_file"] = Path(own["model_file"])
        return cls(**own, options=raw)


class InferenceWorker:
    """Runs in a Ray actor (or in-process): one inference object, many shards."""

    def __init__(self, inference_cls: type[Inference], model: TrainedModel, options: dict, device: str,
                 plan: DataPlan, batch_size: int, threads: int = 1, log_file: Path | None = None,
                 storage_env: dict[str, str] | None = None):
        import torch

        from espnet3.orchestration.ray_process import ray_process

        # An actor's prints (ESPnet2's model-building notices, tracebacks) go to its log for the
        # actor's lifetime, as training ranks' do, not through Ray's log forwarding to the console.
        self._process = ray_process(storage_env, log_file)
        self._process.__enter__()
        self.log_file = log_file
        # On a node without the run's files (a run in object storage): the model and token lists.
        plan.pull_files()
        storage.pull(model.train_config)
        storage.pull(model.model_file)
        torch.set_num_threads(max(1, threads))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.inference = inference_cls(model, options, device)
        self.plan = plan
        self.batch_size = batch_size
        self._datasets: dict[str, Any] = {}

    def run(self, split: str, keys: Sequence[str]) -> list[dict[str, Any]]:
        if split not in self._datasets:
            self._datasets[split] = self.plan.dataset(split, train=False)
        dataset = self._datasets[split]
        results = []
        for start in range(0, len(keys), self.batch_size):
            items = [dataset[key] for key in keys[start : start + self.batch_size]]
            for (utt, _), out in zip(items, self.inference(items)):
                results.append({"utt_id": utt, **out})
        if self.log_file is not None:
            storage.push(self.log_file)
        return results


def _length_order(plan: DataPlan, split: str) -> list[str]:
    """Utterance ids, longest first (by the split's sort-key shape file); a sharded split's in
    shard order, so that each inference worker streams its shards once."""
    shapes = plan.shapes(split)
    if plan.source(split).shards is not None:
        return [u for u, _ in (line.split(maxsplit=1) for line in shapes.files[0].read_text(encoding="utf-8").splitlines())]
    lengths = {}
    for line in shapes.files[0].read_text(encoding="utf-8").splitlines():
        utt, shape = line.split(maxsplit=1)
        lengths[utt] = int(shape.split(",")[0])
    return sorted(lengths, key=lambda u: (-lengths[u], u))


def _write_value(split_dir: Path, output: Output, utt: str, value: Any, sample_rate: int) -> str:
    """The table value of one output: the value itself, or the path of the file written for it."""
    if output.kind == "text":
        return str(value)
    if output.kind == "wav":
        import soundfile

        # (samples, rate) when the decoder knows its rate only once built (TTS, codecs)
        audio, rate = value if isinstance(value, tuple) else (value, sample_rate)
        audio = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
        path = split_dir / output.name.removesuffix(".scp") / f"{utt}.wav"
        atomic_save(path, lambda tmp: soundfile.write(str(tmp), audio, int(rate), format="WAV", subtype="PCM_16"))
        return str(path)
    path = split_dir / output.name.removesuffix(".scp") / f"{utt}.npy"
    atomic_save(path, lambda tmp: _save_npy(tmp, np.asarray(value)))
    return str(path)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append .npy to the temp name
        np.save(f, array)


def _write_shard(shard_dir: Path, split_dir: Path, outputs: Sequence[Output], results: list[dict],
                 sample_rate: int) -> None:
    """The shard's tables (only the outputs the decoder produced, e.g. spk1.scp of a 1-speaker model)."""
    lines: dict[str, list[str]] = {}
    for result in results:
        for output in outputs:
            if output.name in result:
                value = _write_value(split_dir, output, result["utt_id"], result[output.name], sample_rate)
                lines.setdefault(output.name, []).append(f"{result['utt_id']} {value}\n")
    for name, rows in lines.items():
        atomic_write(shard_dir / name, "".join(rows))
    atomic_write(shard_dir / DONE, f"{len(results)}\n")  # last: the shard is complete


def _merge(split_dir: Path, outputs: Sequence[Output], num_shards: int) -> None:
    for output in outputs:
        parts = [split_dir / "shards" / str(k) / output.name for k in range(num_shards)]
        if not any(p.is_file() for p in parts):
            continue  # an output this decoder does not produce
        rows = [row for p in parts if p.is_file() for row in p.read_text(encoding="utf-8").splitlines(keepends=True)]
        atomic_write(split_dir / output.name, "".join(sorted(rows)))


def infer(
    plan: DataPlan,
    inference_cls: type[Inference],
    model: TrainedModel,
    spec: InferenceSpec,
    out_dir: Path,
    *,
    splits: Sequence[str],
    num_workers: int = 1,
    use_gpu: bool = False,
    cpus_per_worker: float = 1.0,
) -> dict[str, Path]:
    """Decode ``splits`` into ``out_dir/<split>/``; returns ``split -> directory``.

    With ``num_workers`` > 1 (a Ray cluster is connected), shards are decoded by that many Ray
    actors; with 1, in this process.
    """
    done_dirs = {}
    workers: list = []
    stop_after = int(os.environ.get(STOP_AFTER_ENV, "0") or 0)
    written = 0
    try:
        for split in splits:
            split_dir = out_dir / split
            keys = _length_order(plan, split)
            num_shards = math.ceil(len(keys) / spec.shard_size)
            shards = {k: keys[k * spec.shard_size : (k + 1) * spec.shard_size] for k in range(num_shards)}
            manifest = _manifest(spec, model, inference_cls, keys)
            if _stale(split_dir, manifest):
                print(f"[espnet3] infer [{split}]: the model, options or data changed since "
                      f"{split_dir / 'shards'} was written; decoding all shards again", flush=True)
                shutil.rmtree(split_dir / "shards")
                storage.delete(storage.home(split_dir / "shards"))  # a resume elsewhere must not find them
            todo = [k for k in shards if not (split_dir / "shards" / str(k) / DONE).is_file()]
            started = time.monotonic()
            print(f"[espnet3] infer [{split}]: {len(keys)} utterances in {num_shards} shards, "
                  f"{num_shards - len(todo)} already done", flush=True)
            atomic_write_json(split_dir / MANIFEST, manifest)
            if todo and not workers:
                workers = _start_workers(inference_cls, model, spec, plan, num_workers, use_gpu, cpus_per_worker,
                                         out_dir / LOG_DIR)
            for k, results in _decode(workers, split, {k: shards[k] for k in todo}):
                _write_shard(split_dir / "shards" / str(k), split_dir, inference_cls.outputs, results,
                             inference_cls.sample_rate)
                written += 1
                if stop_after and written >= stop_after:
                    raise SystemExit(f"{STOP_AFTER_ENV}={stop_after}: stopping after {written} shard(s)")
            _merge(split_dir, inference_cls.outputs, num_shards)
            print(f"[espnet3] infer [{split}]: done in {time.monotonic() - started:.1f}s -> "
                  f"{storage.home(split_dir)}", flush=True)
            done_dirs[split] = split_dir
    finally:
        for worker in workers:
            if not isinstance(worker, InferenceWorker):
                import ray

                ray.kill(worker)
    return done_dirs


def _manifest(spec: InferenceSpec, model: TrainedModel, inference_cls: type[Inference], keys: Sequence[str]) -> dict:
    """What a split's shards were decoded from: finished shards are reused only when all of it is
    unchanged (a different model, beam or utterance list would otherwise mix into the results)."""
    stat = model.model_file.stat()
    return {
        "shard_size": spec.shard_size,
        "num_utterances": len(keys),
        "utterances_hash": hashlib.sha256("\n".join(keys).encode()).hexdigest(),
        "decoder": f"{inference_cls.__module__}.{inference_cls.__qualname__}",
        "options": json.loads(json.dumps(spec.options, default=str)),
        "batch_size": spec.batch_size,
        "model_file": str(model.model_file.resolve()),
        "model_file_size": stat.st_size,
        "model_file_mtime_ns": stat.st_mtime_ns,
    }


def _stale(split_dir: Path, manifest: dict) -> bool:
    if not (split_dir / "shards").is_dir():
        return False
    try:
        return json.loads((split_dir / MANIFEST).read_text()) != manifest
    except (OSError, ValueError):
        return True


def _start_workers(inference_cls, model, spec, plan, num_workers, use_gpu, cpus_per_worker, log_dir: Path) -> list:
    args = (inference_cls, model, spec.options, spec.device, plan, spec.batch_size, int(cpus_per_worker))
    if num_workers <= 1:
        return [InferenceWorker(*args)]
    import ray

    actor = ray.remote(InferenceWorker).options(num_cpus=cpus_per_worker, num_gpus=1 if use_gpu else 0)
    return [actor.remote(*args, log_file=log_dir / f"worker{i}.log", storage_env=storage.worker_env())
            for i in range(num_workers)]


def _decode(workers: list, split: str, shards: dict[int, list[str]]):
    """``(shard index, results)`` as shards finish; each worker takes the next shard when free."""
    if not shards:
        return
    if isinstance(workers[0], InferenceWorker):
        for k, keys in shards.items():
            yield k, workers[0].run(split, keys)
        return
    import ray

    queue = list(shards.items())
    running = {}
    for worker in workers:
        if queue:
            k, keys = queue.pop(0)
            running[worker.run.remote(split, keys)] = (k, worker)
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        k, worker = running.pop(ready[0])
        if queue:
            k_next, keys = queue.pop(0)
            running[worker.run.remote(split, keys)] = (k_next, worker)
        yield k, ray.get(ready[0])
