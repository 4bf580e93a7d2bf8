"""The typed data plan of a run: built once on the driver, passed to every worker and stage.

A :class:`DataPlan` holds everything needed to turn a split into batches: where each split's data
is (ESPnet2 triples, absolute paths), how items are preprocessed and collated (the task's ESPnet2
functions), how they are batched (``dataloader:``), where the shape files live, and the seed.
It is small and picklable; Ray workers receive it instead of re-reading the config.

Building it (:func:`build_data_plan`) is where every data check happens, before Ray starts: the
files of every split, the task's required data names, the token lists (written from the training
text when missing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from espnet3.data.checks import check_split
from espnet3.data.dataset import build_dataset, dataset_keys
from espnet3.errors import DataError
from espnet3.data.loader import LoaderSpec, make_dataloader
from espnet3.data.preprocess import PreprocessSpec
from espnet3.data.sampler import CATEGORY_FILE, DistributedBatchSampler, category_epoch_batches, espnet2_batches
from espnet3.data.shapes import SplitShapes, ensure_shapes
from espnet3.data.sources import SplitSource
from espnet3.data.spec import DataSpec, plain_mapping
from espnet3.data.tokenizer import TokenStream, prepare_token_list, token_streams


@dataclass(frozen=True)
class DataPlan:
    """Everything a worker needs to load a split (see the module docstring).

    Attributes:
        data: the ``data:`` section with every split resolved to triples and absolute paths.
        preprocess: preprocessing and collation.
        loader: batching and DataLoader options.
        stats_dir: where ``<split>/<name>_shape`` files are (``stats_dir`` of the config).
        seed: shuffling seed (the config's ``seed``).
        token_streams: the token lists of the run (for decoding and packing).
    """

    data: DataSpec
    preprocess: PreprocessSpec
    loader: LoaderSpec
    stats_dir: Path
    seed: int = 0
    token_streams: tuple[TokenStream, ...] = ()

    def source(self, split: str) -> SplitSource:
        return self.data.split(split)

    def shapes(self, split: str, *, parallel: bool = False, defer_large: bool = False, log: bool = False
               ) -> SplitShapes | None:
        """The split's shape files (computed on first use; see :mod:`espnet3.data.shapes`)."""
        source = self.source(split)
        shapes = ensure_shapes(
            source, self.preprocess, self.stats_dir / split, train=self.training_preprocess(split),
            parallel=parallel, defer_large=defer_large, log=log,
        )
        if shapes is not None and source.target is not None:
            _check_required(self.preprocess, split, source, shapes.names)
        return shapes

    def training_preprocess(self, split: str) -> bool:
        """Whether ``split`` is loaded with the training-time preprocessor: ``train``, and ``valid``
        with ``data.valid_preprocess: train``."""
        return split == "train" or (split == "valid" and self.data.valid_preprocess == "train")

    def dataset(self, split: str, train: bool | None = None):
        """``dataset[utt_id] -> (utt_id, arrays)``; ``train`` (default: :meth:`training_preprocess`)
        picks the training-time preprocessor (augmentation, random crops)."""
        train = self.training_preprocess(split) if train is None else train
        return build_dataset(self.source(split), self.preprocess.preprocess_fn(train=train))

    def _category_file(self, split: str) -> Path | None:
        if not self.loader.by_category:
            return None
        source = self.source(split)
        if not source.triples:
            raise DataError(f"`dataloader.batch_type: {self.loader.batch_type}` needs ESPnet2 triples in `{source.key}`")
        path = source.triples[0].path.parent / CATEGORY_FILE
        if not path.is_file():
            raise DataError(
                f"`dataloader.batch_type: {self.loader.batch_type}` reads {path} (`<category> <utt_id> ...` "
                f"lines, beside the first data file of `{source.key}`), which does not exist; write it or "
                "choose another batch_type"
            )
        return path

    def _manifest(self, split: str):
        """The split's ``shards.json`` (:class:`espnet3.data.shard_format.ShardManifest`), or None."""
        source = self.source(split)
        if source.shards is None:
            return None
        from espnet3.data.shard_format import ShardManifest

        return ShardManifest.load(source.shards, source.key)

    def batches(self, split: str, epoch: int = 0) -> list[tuple[str, ...]]:
        """ESPnet2's batches of the split (utterance ids); ``epoch`` matters for catbel / catpow only.

        A sharded split's come in shard order (one pass reads each shard once)."""
        shapes = self.shapes(split)
        manifest = self._manifest(split)
        if manifest is not None:
            from espnet3.data.shard_sampler import epoch_plan

            return [tuple(b) for b in epoch_plan(manifest, self.loader, world_size=1, num_workers=0,
                                                 shuffle=False, seed=self.seed, epoch=epoch)[0]]
        return espnet2_batches(self.loader, shapes.files, self._category_file(split), epoch=epoch + 1)

    def dataloader(
        self,
        split: str,
        *,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
        resume: dict[str, int] | None = None,
    ) -> DataLoader:
        """One training worker's DataLoader over ``split``; only ``train`` is shuffled and augmented.

        Its ``batch_sampler`` has ``set_epoch(epoch)``, which Lightning calls (through
        ``batch_sampler.sampler``) at every epoch start; other loops should call it themselves.
        ``resume`` (the sampler's ``progress`` saved with a checkpoint) continues that epoch with
        the batches not trained yet.
        """
        shapes = self.shapes(split)
        manifest = self._manifest(split)
        if manifest is not None:  # batches that keep each DataLoader worker on its own shards
            from espnet3.data.shard_sampler import ShardBatchSampler

            sampler = ShardBatchSampler(manifest, self.loader, rank=rank, world_size=world_size,
                                        num_workers=num_workers, shuffle=split == "train", seed=self.seed)
        else:
            category = self._category_file(split)
            sampler = DistributedBatchSampler(
                espnet2_batches(self.loader, shapes.files, category, epoch=1),
                rank=rank,
                world_size=world_size,
                shuffle=split == "train",
                seed=self.seed,
                epoch_batches=category_epoch_batches(self.loader, shapes.files, category) if category else None,
            )
        if resume is not None:
            sampler.resume(resume)
        return make_dataloader(
            self.dataset(split),
            sampler,
            self.preprocess.collate_fn(train=self.training_preprocess(split)),
            self.loader,
            num_workers=num_workers,
            pin_memory=pin_memory,
        )

    def sample_batch(self, split: str, max_items: int = 2):
        """A small real batch of ``split`` (its first items, collated as the validation loader
        collates them): what the driver runs the model on before Ray starts. Needs no shape files,
        which a large split only has once Ray has measured it."""
        dataset = self.dataset(split, train=False)
        ids = dataset_keys(dataset)[:max_items]
        return self.preprocess.collate_fn(train=False)([dataset[utt] for utt in ids])

    def prepare_shapes(self, splits: Iterable[str], *, parallel: bool = False, defer_large: bool = False) -> None:
        """Compute (or reuse) the shape files of ``splits``: every item is loaded once, on the driver's side.

        ``defer_large`` (before Ray starts) leaves splits too large for one process to a later
        ``parallel`` call.
        """
        for split in splits:
            self.shapes(split, parallel=parallel, defer_large=defer_large, log=True)

    def pull_files(self) -> None:
        """Make the run's own data files (shape files, statistics, token lists) and the splits' list
        files present on this node when they live in object storage (:mod:`espnet3.storage`): a worker on a node that the
        launcher never wrote to has none of them."""
        from espnet3 import storage
        from espnet3.data import remote

        storage.pull_tree(self.stats_dir, skip=lambda relative: relative.startswith("logs/"))
        for split in self.data.split_names:
            remote.ensure_lists(t.path for t in self.source(split).triples)
        for stream in self.token_streams:
            for path in (stream.token_list, stream.bpemodel):
                if path is not None:
                    storage.pull(path)

    def with_stats_dir(self, stats_dir: Path) -> DataPlan:
        return replace(self, stats_dir=Path(stats_dir))


def _check_required(preprocess: PreprocessSpec, split: str, source: SplitSource, names: Iterable[str]) -> None:
    evaluation = split not in ("train", "valid")
    required = preprocess.required_names(train=not evaluation, inference=evaluation)
    missing = [n for n in required if n not in set(names)]
    if missing:
        example = f"[<dir>/{missing[0]}.scp, {missing[0]}, <type>]"
        raise DataError(
            f"`{source.key}` lacks the data {', '.join(missing)} that task `{preprocess.task}` requires "
            f"(it has {', '.join(names) or 'none'}); add a triple such as {example} to `{source.key}`"
        )


def _check_fold_lengths(loader: LoaderSpec, source: SplitSource) -> None:
    """ESPnet2 folds with one length per shape file (data stream, in triple order), and fails in
    every worker on a longer list; a recipe's asr.sh lengths on an LM's one stream is the usual case."""
    if loader.batch_type != "folded" or source.target is not None or len(loader.fold_length) <= len(source.names):
        return
    names = ", ".join(source.names)
    raise DataError(
        f"`dataloader.fold_length` has {len(loader.fold_length)} lengths {list(loader.fold_length)} but "
        f"`{source.key}` has {len(source.names)} data stream(s) ({names}); give one length per stream, in "
        f"the order of `{source.key}`, e.g. fold_length: {list(loader.fold_length[: len(source.names)])}"
    )


def _check_sharded(loader: LoaderSpec, source: SplitSource) -> None:
    if source.shards is not None and loader.by_category:
        raise DataError(
            f"`dataloader.batch_type: {loader.batch_type}` draws utterances by category from the whole split, "
            f"which a sharded split (`{source.key}`: {source.description}) streams shard by shard; use numel, "
            "length, folded, sorted or unsorted batches, or the unsharded data directory"
        )


def _preprocess_spec(cfg: Mapping[str, Any], data: DataSpec) -> tuple[PreprocessSpec, tuple[TokenStream, ...]]:
    """The preprocessing of a run, with its token lists written first (they are read into the args)."""
    from espnet3.utils.task_utils import preprocess_keys, resolve_task, task_args

    task = cfg.get("task")
    model = cfg.get("model") or {}
    preprocessor = cfg.get("preprocessor") or None
    target = dict(preprocessor) if preprocessor and "_target_" in preprocessor else None
    if task:
        defaults = data.preprocessor_defaults()
        settings = task_args(task, model, preprocessor, defaults, read_token_lists=False)
        streams = tuple(token_streams(settings, data.train, data.nbpe))
        for stream in streams:
            prepare_token_list(stream)
        args = task_args(task, model, preprocessor, defaults)
        keys = preprocess_keys(resolve_task(task))
        return PreprocessSpec(task=str(task), args=args, target=target, keys=keys), streams
    if target is not None:
        return PreprocessSpec(target=target), ()
    if preprocessor:
        raise DataError(
            "`preprocessor` options are ESPnet2 task options: without `task` give "
            "`preprocessor: {_target_: pkg.MyPreprocessor, ...}` (an AbsPreprocessor), or drop the block"
        )
    if "text" not in data.train.names:
        return PreprocessSpec(), ()
    defaults = data.preprocessor_defaults()
    streams = tuple(token_streams(defaults, data.train, data.nbpe))
    for stream in streams:
        prepare_token_list(stream)
    common = {
        "token_type": data.token_type,
        "token_list": str(data.token_list),
        "bpemodel": str(data.bpemodel) if data.token_type == "bpe" else None,
        "text_name": "text",
    }
    return PreprocessSpec(common=common), streams


def build_data_plan(cfg: Mapping[str, Any], *, splits: Iterable[str] | None = None) -> DataPlan:
    """Parse, resolve and check the data side of a (resolved, plain) train.yaml config.

    Args:
        cfg: the config as plain containers: ``data``, ``dataloader``, ``preprocessor``, ``task``,
            ``model``, ``stats_dir``, ``seed``.
        splits: the splits whose files are checked (default: all); stages that never read the test
            data do not need it to exist yet.

    Raises:
        DataError: naming the file (and line) or key, and the fix.
    """
    data = DataSpec.from_config(cfg["data"])
    splits = tuple(data.split_names if splits is None else splits)
    data = _resolve(data, splits)
    for split in splits:
        check_split(data.split(split))
    preprocess, streams = _preprocess_spec(cfg, data)
    for split in splits:
        source = data.split(split)
        if source.target is None:
            _check_required(preprocess, split, source, source.names)
    loader = LoaderSpec.from_config(plain_mapping(cfg.get("dataloader") or {}, "dataloader"))
    for split in (s for s in splits if s in ("train", "valid")):
        _check_fold_lengths(loader, data.split(split))
        _check_sharded(loader, data.split(split))
    return DataPlan(
        data=data,
        preprocess=preprocess,
        loader=loader,
        stats_dir=Path(cfg["stats_dir"]).resolve(),
        seed=int(cfg.get("seed") or 0),
        token_streams=streams,
    )


def _resolve(data: DataSpec, splits: tuple[str, ...]) -> DataSpec:
    """Resolve the splits that will be read; the others keep their unresolved form (may not exist yet)."""
    def fix(name: str, source: SplitSource) -> SplitSource:
        return source.resolved().with_absolute_paths() if name in splits else source.with_absolute_paths()

    return replace(
        data,
        train=fix("train", data.train),
        valid=fix("valid", data.valid),
        test={k: fix(k, v) for k, v in data.test.items()},
        token_list=data.token_list.resolve(),
        bpemodel=data.bpemodel.resolve() if data.bpemodel is not None else None,
    )
