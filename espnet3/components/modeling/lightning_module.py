"""ESPnetLightningModule: what every Ray Train worker runs around an ESPnet model.

A thin coordinator. The forward contract, the NaN/Inf consensus, parameter
selection and multi-optimizer routing live in their own modules; this class wires
them into Lightning's hooks.

Skipping under DDP: Lightning (automatic optimisation) forbids returning ``None``
from ``training_step`` in distributed runs, and DDP needs every rank to run the
same backward. So a skipped batch returns a graph-connected zero loss (all ranks
back-propagate zeros, the gradient all-reduce stays matched, accumulated gradients
are unchanged) and :meth:`optimizer_step` runs the closure but not the optimizer,
so neither parameters nor optimizer state (Adam's moments) move on any rank.

One host sync per step: without gradient accumulation the skip decision waits until after
the backward, where the loss flag, the preemption notice and the gradient check take one copy to
the host (:meth:`nan_guard.NonFiniteGuard.agree_step`); under DDP the flags travel in the
gradient all-reduce itself (as a parameter's gradient, :mod:`step_flags`), elsewhere (FSDP) in one
collective of their own. The zero is chosen on the device meanwhile. With
accumulation each micro-batch is decided before its backward, so that a skipped micro-batch
leaves the accumulated gradient untouched. The skip counters are logged when they change and at
each epoch's end, never as a per-step host-to-device copy.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from torch import nn

from espnet3.components.modeling.forward_contract import ForwardContract, ForwardOutput
from espnet3.components.modeling.gan_turns import GANTurns, is_espnet2_gan
from espnet3.components.modeling.nan_guard import (
    DEFAULT_MAX_NAN_BATCHES,
    BatchDecision,
    NonFiniteGuard,
    any_rank_true,
    grads_are_finite,
    non_finite,
)
from espnet3.components.modeling.optimization_spec import OptimizationPlan
from espnet3.components.modeling.optimizer_router import OptimizerRouter
from espnet3.components.modeling.param_selection import assign_parameters, freeze_parameters
from espnet3.components.modeling.step_flags import StepFlags
from espnet3.components.modeling.train_stats import TrainStats
from espnet3.utils.instantiate import instantiate

CHECKPOINT_KEY = "espnet3"


def _plain(config: Any) -> dict:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"config must be a DictConfig or a dict; got {type(config).__name__}.")


class ESPnetLightningModule(L.LightningModule):
    """Train any ``nn.Module`` whose forward returns ``loss, stats, weight``.

    Args:
        model: the model; ``model(**batch)`` is called on every step.
        config: the train config (DictConfig or dict). Only the optimisation keys
            (``optimizer``/``scheduler``/... or ``optimizers``/``schedulers``),
            ``max_nan_batches``, ``trainer`` and ``model.freeze_param`` are read, so
            a config holding just an optimizer is enough.
    """

    def __init__(self, model: nn.Module, config: Any) -> None:
        super().__init__()
        cfg = _plain(config)
        self.model = model
        self.plan = OptimizationPlan.from_config(cfg)
        freeze = (cfg.get("model") or {}).get("freeze_param") or []
        self.frozen_parameters = freeze_parameters(model, freeze) if freeze else []
        self.nan_guard = NonFiniteGuard(cfg.get("max_nan_batches", DEFAULT_MAX_NAN_BATCHES))
        self.contract = ForwardContract(type(model).__name__, multi=self.plan.multi)
        self.automatic_optimization = not self.plan.multi
        self.router = OptimizerRouter(self.plan.optimizers) if self.plan.multi else None
        self.turns = self._gan_turns(model)
        self.skipped_steps = 0
        self._skip_batch = False
        self._pending: tuple[ForwardOutput, torch.Tensor] | None = None
        self._stepped = False
        self._warned_valid_nan = False
        self._optimizer_names: dict[int, str] = {}
        self.step_flags = StepFlags()
        self.train_stats = TrainStats()

    # ----------------------------------------------------------------- helpers
    def _gan_turns(self, model: nn.Module) -> GANTurns | None:
        """ESPnet2 GAN models train turn by turn (see :mod:`gan_turns`), one optimizer per turn."""
        if not is_espnet2_gan(model):
            return None
        if not self.plan.multi:
            raise ValueError(
                f"{type(model).__name__} is an ESPnet2 GAN model: configure `optimizers: {{discriminator: "
                "{optimizer: ..., params: [<task>.discriminator]}, generator: {optimizer: ..., params: "
                "[<task>.generator]}}` (ESPnet2's optim2 and optim) instead of `optimizer`"
            )
        return GANTurns(model, list(self.plan.optimizers), self.contract)

    @staticmethod
    def _unpack(batch: Any) -> Mapping[str, Any]:
        if isinstance(batch, Mapping):
            return batch
        if isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[1], Mapping):
            return batch[1]  # (utterance ids, tensors) from ESPnet2's CommonCollateFn
        raise TypeError(
            "A batch must be a dict of model inputs or an (ids, dict) pair as produced by "
            f"espnet2.train.collate_fn.CommonCollateFn; got {type(batch).__name__}."
        )

    def _forward(self, batch: Any, training: bool) -> ForwardOutput:
        return self.contract.check(self.model(**self._unpack(batch)), training=training)

    def _trainable(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _zero_loss(self) -> torch.Tensor:
        """A zero loss touching every trainable parameter, so DDP's all-reduce runs as usual."""
        return torch.cat([p.reshape(-1)[:1] for p in self._trainable()]).sum() * 0.0

    def _check_grads(self) -> bool:
        # A GradScaler (fp16) already skips steps with inf gradients and must see
        # them to lower its scale; checking again would stall it.
        return getattr(self.trainer.precision_plugin, "scaler", None) is None

    def _grads_finite(self) -> bool:
        finite = grads_are_finite(self._trainable())
        if isinstance(self.trainer.strategy, FSDPStrategy):
            # Each rank holds only its shard of the gradients (DDP's are all-reduced, so every
            # rank answers alike): decide together, or ranks would update different shards.
            return not any_rank_true(torch.tensor(not finite))
        return finite

    def _logs_this_step(self) -> bool:
        """Whether this training step logs ``train/*``: where Lightning writes to the loggers (every
        ``trainer.log_every_n_steps`` steps, and at a stop) and on each epoch's last batch, so that
        epoch-end callbacks (checkpointing, early stopping on a ``train/`` key) see that batch.

        Every ``self.log`` key costs Lightning's result collection Python time on each step,
        whether or not a logger ever sees it (``_ResultMetric.to`` walks the metric's ``__dict__``):
        logged on every step, it made this module 1.4x a bare LightningModule on a model whose
        step takes a few milliseconds. Between those steps the values add up in
        :class:`TrainStats`, and ``trainer.callback_metrics`` keeps the last logged means.
        """
        loop = self.trainer.fit_loop.epoch_loop
        return self.trainer._logger_connector.should_update_logs or loop.batch_progress.is_last_batch

    def _log_stats(self, mode: str, out: ForwardOutput) -> None:
        """``valid/*`` every batch (Lightning averages them over the epoch, weighted); ``train/*``
        added to :class:`TrainStats` every step and logged as their means on log steps."""
        training = mode == "train"
        stats = dict(out.stats)
        if out.loss is not None:
            stats.setdefault("loss", out.loss.detach())
        for step in out.losses:
            stats[f"{step.name}/loss"] = step.loss.detach().reshape(())
        batch_size = 1.0 if out.weight is None else out.weight
        if training:
            self.train_stats.add(stats, batch_size)
            if not self._logs_this_step():
                return
            stats = self.train_stats.means(reset=self.trainer._logger_connector.should_update_logs)
        loss = stats.pop("loss", None)
        kwargs = dict(
            batch_size=batch_size,
            on_step=training,
            on_epoch=not training,
            sync_dist=not training,
        )
        if loss is not None:
            self.log(f"{mode}/loss", loss, prog_bar=True, **kwargs)
        if stats:
            self.log_dict({f"{mode}/{key}": value for key, value in stats.items()}, **kwargs)

    # ---------------------------------------------------------------- training
    def setup(self, stage: str) -> None:
        """Under DDP the step's flags ride in the gradient all-reduce (:mod:`step_flags`), decided
        here: the strategy wraps the module after this hook."""
        if stage != "fit":
            return
        strategy = self.trainer.strategy
        self.step_flags.use(self.automatic_optimization and self.trainer.accumulate_grad_batches == 1
                            and isinstance(strategy, DDPStrategy))
        if isinstance(strategy, FSDPStrategy):
            # Not sharded with the model: flattened into its FlatParameter, the two unused flags
            # would move the shard boundaries (and take a rank's whole share of a small model).
            key = "ignored_modules" if "ignored_modules" in strategy.kwargs else "ignored_states"
            strategy.kwargs[key] = [*strategy.kwargs.get(key, ()), self.step_flags]

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._stepped = False

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        if self._trainer is None:
            return self._standalone_step(batch)
        if self.turns is not None:
            return self._train_turns(self._unpack(batch))
        out = self._forward(batch, training=True)
        if self.router is not None:
            self.router.check_names(out.losses)
        elif self.trainer.accumulate_grad_batches == 1:
            # Decided after the backward (optimizer_step). Where this rank's loss is not finite a
            # zero is back-propagated instead, chosen on the device: the graph (so DDP's gradient
            # all-reduce) is the usual one, and the gradients of a skipped batch are never used.
            loss_bad = non_finite(out.all_losses())
            self._pending = (out, loss_bad)
            loss = torch.where(loss_bad, torch.zeros_like(out.loss), out.loss)
            if not self.step_flags.active:
                return loss
            return self.step_flags.attach(loss, loss_bad, self.nan_guard.local_notice())
        self._record(self.nan_guard.decide(out.all_losses()))
        if self.router is not None:
            return self._route(out) if not self._skip_batch else None
        if self._skip_batch:
            return self._zero_loss()
        self._log_stats("train", out)
        return out.loss

    def _every_turn(self, batch: Any) -> ForwardOutput:
        """Every GAN turn's forward on ``batch``, without updates between them (as ESPnet2's GAN
        trainer validates), merged into one output."""
        outs = [self.turns.turn(self._unpack(batch), name) for name in self.turns.order]
        self.turns.end_batch()
        return ForwardOutput(
            loss=None,
            losses=[step for o in outs for step in o.losses],
            stats={k: v for o in outs for k, v in o.stats.items()},
            weight=outs[0].weight,
        )

    def _standalone_step(self, batch: Any) -> torch.Tensor | list | None:
        """``training_step`` outside a Trainer, as upstream ESPnet3's unit tests and users call it.

        Returns the loss (the ``OptimizationStep`` list of a multi-optimizer model, every turn's for
        a GAN), or ``None`` for a non-finite one, which counts towards ``max_nan_batches`` as in
        training. Nothing is logged or stepped: there is no Trainer to log to or to step with; the
        one-sync-per-step path (the decision after the backward) needs the Trainer's optimizer_step.
        """
        if self.turns is not None:
            losses = self._every_turn(batch).losses
            bad = self.nan_guard.decide([step.loss for step in losses])
            return None if bad is BatchDecision.SKIP else losses
        out = self._forward(batch, training=True)
        if self.router is not None:
            self.router.check_names(out.losses)
        if self.nan_guard.decide(out.all_losses()) is BatchDecision.SKIP:
            return None
        return out.loss if self.router is None else list(out.losses)

    def _record(self, decision: BatchDecision) -> None:
        self._skip_batch = decision is BatchDecision.SKIP
        if self._skip_batch:
            self._log_skips()

    def _log_skips(self) -> None:
        self.log("train/skipped_batches", float(self.nan_guard.total_skips), on_step=True, on_epoch=False)
        self.log("train/skipped_steps", float(self.skipped_steps), on_step=True, on_epoch=False)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        loss = optimizer_closure()  # training_step + backward, on every rank
        if self._pending is not None:
            out, loss_bad = self._pending
            self._pending = None
            params = self._trainable() if self._check_grads() else None
            agreed = self.step_flags.agreed() if self.step_flags.active else None
            any_loss_bad, grads_bad = self.nan_guard.agree_step(loss_bad, params, agreed)
            self._record(self.nan_guard.record(any_loss_bad))
            if self._skip_batch:
                return
            self._log_stats("train", out)
        else:
            if self._skip_batch:
                return
            grads_bad = self._check_grads() and not self._grads_finite()
        if grads_bad:
            self._count_skipped_step()
            return
        optimizer.step(closure=lambda: loss)
        self._stepped = True

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        # Step-interval schedulers follow optimizer updates, as in ESPnet2: a skipped
        # batch must not advance the learning-rate schedule either.
        if self.plan.schedulers.get("default") and self.plan.schedulers["default"].interval == "step":
            if not self._stepped:
                return
        super().lr_scheduler_step(scheduler, metric)

    def _count_skipped_step(self) -> None:
        self.skipped_steps += 1
        self._log_skips()

    def _train_turns(self, batch: Mapping[str, Any]) -> None:
        """ESPnet2's GAN trainer loop for one batch: each turn's forward, then its update, in turn order.

        The NaN consensus decides per turn; a non-finite turn skips itself and the turns after
        it on every rank, and the batch counts as skipped.
        """
        skipped = False
        for name in self.turns.order:
            out = self.turns.turn(batch, name)
            if self.nan_guard.any_rank_bad(out.all_losses()):
                skipped = True
                break
            self._route(out, log_update_steps=False)
        self.turns.end_batch()
        self._record(self.nan_guard.record(skipped))
        self._log_update_steps()
        return None

    def _route(self, out: ForwardOutput, log_update_steps: bool = True) -> None:
        names = list(self.plan.optimizers)
        optimizers = self.optimizers()
        optimizers = dict(zip(names, optimizers if isinstance(optimizers, list) else [optimizers]))
        check = self._check_grads()
        updated, skipped = self.router.route(
            out.losses,
            optimizers,
            backward=self.manual_backward,
            grads_finite=lambda name: not check or grads_are_finite(self.router.params[name]),
        )
        for _ in skipped:
            self._count_skipped_step()
        schedulers = self._schedulers_by_name()
        for name in updated:
            if name in schedulers and self.plan.schedulers[name].interval == "step":
                schedulers[name].step()
        self._log_stats("train", out)
        if log_update_steps:
            self._log_update_steps()
        return None

    def _log_update_steps(self) -> None:
        if not self._logs_this_step():
            return
        self.log_dict(
            {f"train/{name}/update_step": float(state.update_step) for name, state in self.router.state.items()},
            on_step=True,
            on_epoch=False,
        )

    def _schedulers_by_name(self) -> dict[str, Any]:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return {}
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        return dict(zip([n for n in self.plan.optimizers if n in self.plan.schedulers], schedulers))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.router is None:
            return
        name = self._optimizer_names[id(optimizer)]
        spec = self.plan.optimizers[name]
        if spec.gradient_clip_val is not None:
            self.clip_gradients(
                optimizer,
                gradient_clip_val=spec.gradient_clip_val,
                gradient_clip_algorithm=spec.gradient_clip_algorithm,
            )

    def on_train_epoch_end(self) -> None:
        self.log_dict(
            {"train/skipped_batches": float(self.nan_guard.total_skips), "train/skipped_steps": float(self.skipped_steps)},
            on_step=False,
            on_epoch=True,
        )
        if self.router is None:
            return
        for name, scheduler in self._schedulers_by_name().items():
            spec = self.plan.schedulers[name]
            if spec.interval != "epoch":
                continue
            if spec.monitor is None:
                scheduler.step()
                continue
            if spec.monitor not in self.trainer.callback_metrics:
                raise KeyError(
                    f"`schedulers.{name}.monitor` is {spec.monitor!r}, which was not logged; "
                    f"logged metrics: {sorted(self.trainer.callback_metrics)}."
                )
            scheduler.step(self.trainer.callback_metrics[spec.monitor])

    # -------------------------------------------------------------- validation
    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        """Log ``valid/*`` (synced across ranks); returns the loss, or ``None`` for a non-finite
        batch (left out of the averages), also when called without a Trainer."""
        out = self._every_turn(batch) if self.turns is not None else self._forward(batch, training=False)
        # Validation logs are synced across ranks, so every rank must log the same
        # keys: decide jointly. Invalid validation batches never count towards
        # max_nan_batches (upstream shares one counter and can fail a healthy run).
        bad = ~torch.isfinite(torch.stack([loss.detach().float().reshape(()) for loss in out.all_losses()])).all()
        if any_rank_true(bad):
            if not self._warned_valid_nan:
                self._warned_valid_nan = True
                warnings.warn(f"Validation batch {batch_idx} has a non-finite loss; it is left out of valid/*.")
            return None
        if self._trainer is not None:
            self._log_stats("valid", out)
        return out.loss if out.loss is not None else torch.stack([s.loss.reshape(()) for s in out.losses]).sum()

    def logged_metrics(self, batch: Any) -> set[str]:
        """The ``train/*`` and ``valid/*`` keys that training and validation on ``batch`` log.

        One no-grad forward in eval mode (every turn of a GAN), as validation runs it: the driver
        checks ``best_model_criterion`` against these before any Ray worker starts, instead of
        failing at the first report minutes into the run.
        """
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                out = self._every_turn(batch) if self.turns is not None else self._forward(batch, training=False)
        finally:
            self.train(was_training)
        keys = set(out.stats) | {f"{step.name}/loss" for step in out.losses}
        if out.loss is not None:
            keys.add("loss")
        train_only = {f"{name}/update_step" for name in self.plan.optimizers} if self.plan.multi else set()
        return ({f"{phase}/{key}" for phase in ("train", "valid") for key in keys}
                | {f"train/{key}" for key in train_only})

    # -------------------------------------------------------------- optimizers
    def configure_optimizers(self) -> Any:
        if not self.plan.multi:
            optimizer = instantiate(self.plan.optimizers["default"].optimizer, params=self._trainable())
            spec = self.plan.schedulers.get("default")
            if spec is None:
                return optimizer
            return {"optimizer": optimizer, "lr_scheduler": self._scheduler_config(spec, optimizer)}
        groups = assign_parameters(self.model, self.plan.optimizers)
        self.router.bind({name: [p for _, p in group] for name, group in groups.items()})
        optimizers = [
            instantiate(spec.optimizer, params=[p for _, p in groups[name]])
            for name, spec in self.plan.optimizers.items()
        ]
        self._optimizer_names = {id(opt): name for opt, name in zip(optimizers, self.plan.optimizers)}
        by_name = dict(zip(self.plan.optimizers, optimizers))
        schedulers = [
            self._scheduler_config(self.plan.schedulers[name], by_name[name])
            for name in self.plan.optimizers
            if name in self.plan.schedulers
        ]
        return optimizers, schedulers

    @staticmethod
    def _scheduler_config(spec: Any, optimizer: torch.optim.Optimizer) -> dict:
        config = {
            "scheduler": instantiate(spec.scheduler, optimizer=optimizer),
            "interval": spec.interval,
            "name": "lr" if spec.name == "default" else f"lr-{spec.name}",
        }
        if spec.monitor is not None:
            config["monitor"] = spec.monitor
        return config

    # ------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "nan_guard": self.nan_guard.state_dict(),
            "skipped_steps": self.skipped_steps,
            "router": self.router.state_dict() if self.router is not None else None,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get(CHECKPOINT_KEY)
        if state is None:
            return
        self.nan_guard.load_state_dict(state["nan_guard"])
        self.skipped_steps = int(state["skipped_steps"])
        if self.router is not None and state["router"] is not None:
            self.router.load_state_dict(state["router"])

    def ddp_kwargs(self) -> dict[str, Any]:
        """DDP options this module needs (passed to RayDDPStrategy / DDPStrategy).

        Multi-optimizer models back-propagate several losses per step, and each
        reaches only part of the model (the discriminator loss never touches the
        generator), so DDP must look for unused parameters on every backward.
        """
        return {"find_unused_parameters": self.plan.multi}
