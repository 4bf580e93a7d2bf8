"""The GPU code paths, run on CPU: GPU batch sizing, GPU step options and GPU worker resources."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from espnet3.components.gpu import GPUOptions
from espnet3.components.modeling.lightning_module import ESPnetLightningModule
from espnet3.errors import ConfigError
from espnet3.config.gpu_batches import apply_gpu_batches
from espnet3.data.loader import LoaderSpec
from espnet3.orchestration.launch_spec import LaunchSpec, gpu_worker_cpus
from toy_models import Regressor


def _cfg(**dataloader):
    return OmegaConf.create({
        "dataloader": {"batch_type": "numel", "batch_bins": 480000, **dataloader},
        "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.002},
        "scheduler": {"_target_": "espnet2.schedulers.warmup_lr.WarmupLR", "warmup_steps": 300},
    })


def test_a_gpu_run_takes_the_gpu_batch_and_scales_lr_and_warmup_by_the_sqrt_rule():
    cfg = _cfg(gpu={"batch_bins": 1920000})
    notes = apply_gpu_batches(cfg, use_gpu=True, source="train.yaml")
    assert cfg.dataloader.batch_bins == 1920000 and "gpu" not in cfg.dataloader
    assert cfg.optimizer.lr == pytest.approx(0.004)  # 0.002 x sqrt(4)
    assert cfg.scheduler.warmup_steps == 75  # 300 / 4: the same audio per warm-up
    assert any("optimizer.lr: 0.002 -> 0.004" in note for note in notes)


def test_a_cpu_run_drops_the_block_and_keeps_its_own_batch():
    cfg = _cfg(gpu={"batch_bins": 1920000})
    assert apply_gpu_batches(cfg, use_gpu=False, source=None) == []
    assert cfg.dataloader.batch_bins == 480000 and cfg.optimizer.lr == 0.002 and "gpu" not in cfg.dataloader


@pytest.mark.parametrize("rule, lr", [("linear", 0.008), ("none", 0.002)])
def test_the_lr_rule_is_the_users_choice(rule, lr):
    cfg = _cfg(gpu={"batch_bins": 1920000, "lr_scale": rule})
    apply_gpu_batches(cfg, use_gpu=True, source=None)
    assert cfg.optimizer.lr == pytest.approx(lr)


def test_every_named_optimizer_follows_the_batch_and_sizes_by_utterances_scale_too():
    cfg = OmegaConf.create({
        "dataloader": {"batch_type": "sorted", "batch_size": 8, "gpu": {"batch_size": 32}},
        "optimizer": None, "scheduler": None,
        "optimizers": {"gen": {"optimizer": {"_target_": "torch.optim.Adam", "lr": 1e-3}},
                       "dis": {"optimizer": {"_target_": "torch.optim.Adam", "lr": 4e-3}}},
    })
    apply_gpu_batches(cfg, use_gpu=True, source=None)
    assert cfg.optimizers.gen.optimizer.lr == pytest.approx(2e-3)
    assert cfg.optimizers.dis.optimizer.lr == pytest.approx(8e-3)


def test_a_resumed_run_is_not_scaled_twice():
    cfg = _cfg(gpu={"batch_bins": 1920000})
    apply_gpu_batches(cfg, use_gpu=True, source=None)
    saved = OmegaConf.create(OmegaConf.to_yaml(cfg))  # exp_dir/train.yaml
    assert apply_gpu_batches(saved, use_gpu=True, source=None) == []
    assert saved.optimizer.lr == pytest.approx(0.004)


@pytest.mark.parametrize("block, key", [({"batch_binz": 1}, "dataloader.gpu.batch_binz"),
                                        ({"lr_scale": "cubic"}, "dataloader.gpu.lr_scale")])
def test_a_bad_gpu_block_names_its_key(block, key):
    with pytest.raises(ConfigError) as info:
        apply_gpu_batches(_cfg(gpu=block), use_gpu=False, source="train.yaml")
    assert info.value.key == key


def test_the_default_jobs_gpu_run_uses_a_gpu_batch():
    from espnet3.config import load_config

    cfg = load_config("configs/digits_asr.yaml")
    cpu = cfg.dataloader.batch_bins
    apply_gpu_batches(cfg, use_gpu=True, source=None)
    assert cfg.dataloader.batch_bins >= 4 * cpu


# ------------------------------------------------------------------------------- gpu: options
def test_gpu_options_parse_and_name_a_bad_key():
    assert GPUOptions.from_config(None) == GPUOptions()
    with pytest.raises(ValueError, match=r"`gpu.compiel`.*did you mean `gpu.compile`"):
        GPUOptions.from_config({"compiel": True})
    with pytest.raises(ValueError, match=r"`gpu.tf32` must be true or false"):
        GPUOptions.from_config({"tf32": "yes"})
    with pytest.raises(ValueError, match=r"`gpu.compile_mode`"):
        GPUOptions.from_config({"compile_mode": "fastest"})


def test_tf32_is_switched_on_for_the_process():
    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    try:
        torch.set_float32_matmul_precision("highest")
        GPUOptions(tf32=True).apply_to_process()
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


def test_fused_optimizer_reaches_the_optimizers_that_take_it():
    cfg = {"optimizer": {"_target_": "torch.optim.Adam", "lr": 0.01}}
    module = ESPnetLightningModule(Regressor(), GPUOptions(fused_optimizer=True).optimizer_configs(cfg))
    assert module.configure_optimizers().defaults["fused"] is True
    lbfgs = {"optimizer": {"_target_": "torch.optim.LBFGS", "lr": 0.01}}
    assert GPUOptions(fused_optimizer=True).optimizer_configs(lbfgs) == lbfgs  # takes no `fused`
    assert GPUOptions().optimizer_configs(cfg) is cfg


def test_compile_keeps_the_state_dict_keys_checkpoints_and_averaging_use():
    model = Regressor()
    keys = list(model.state_dict())
    compiled = GPUOptions(compile=True).prepare_model(model)
    assert compiled is model and list(compiled.state_dict()) == keys
    assert model._compiled_call_impl is not None


# ------------------------------------------------------------------------- GPU worker resources
def test_gpu_workers_reserve_a_share_of_the_machines_cpus_for_their_data_loaders():
    assert gpu_worker_cpus(1, cpu_count=16) == 8 and gpu_worker_cpus(2, cpu_count=16) == 7
    assert gpu_worker_cpus(8, cpu_count=16) == 1 and gpu_worker_cpus(1, cpu_count=2) == 1
    assert LaunchSpec(config="x", num_gpus=1).cpus_per_worker == gpu_worker_cpus(1)
    assert LaunchSpec(config="x").cpus_per_worker == 1.0
    assert LaunchSpec(config="x", num_gpus=1, cpus_per_worker=3).cpus_per_worker == 3
    loader = LoaderSpec()
    assert loader.workers_for(8.0, use_gpu=True) == 7 and loader.workers_for(8.0, use_gpu=False) == 0


def test_each_ranks_data_wait_gpu_memory_and_utilisation_reach_the_status_file_and_tensorboard(tmp_path):
    """The driver's side of what the stall watchdog's reporter measures on each rank: its wait for
    data, and on a GPU rank its memory and utilisation (a CPU rank leaves those empty);
    ``espnet3.status`` shows them and TensorBoard gets a scalar each."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from espnet3.orchestration.status import RunStatus
    from espnet3.orchestration.watchdog import RankState, StallMonitor, StallReporter
    from espnet3.status import describe

    import lightning as L

    cpu_rank = StallReporter(board=None, rank=1)
    cpu_rank.setup(trainer=None, pl_module=L.LightningModule(), stage="fit")
    cpu_rank.sample_gpu()
    assert (cpu_rank.state.gpu_mem_gib, cpu_rank.state.gpu_util_pct) == (None, None)

    states = {0: RankState(rank=0, pid=1, host="gpu-node", started=0.0, step=40, phase="forward", progress=0.0,
                           median_step_s=0.25, busy_s=0.2, data_wait_s=0.05, gpu_mem_gib=11.5, gpu_util_pct=87.0),
              1: cpu_rank.state}
    monitor = StallMonitor(board=None, exp_dir=tmp_path, stall_s=None, status=RunStatus(tmp_path, ["train"]))
    monitor._record_pace(states)
    shown = "\n".join(describe(str(tmp_path)))
    assert "rank 0 on gpu-node: step 40" in shown and "GPU 11.50 GiB peak, 87 % busy" in shown
    assert "0.050 s waiting for data" in shown
    assert "rank 1" in shown and shown.count("GPU") == 1, "a CPU rank shows no GPU fields"
    events = EventAccumulator(str(tmp_path / "tensorboard" / "ranks"))
    events.Reload()
    assert {"gpu/rank0/mem_gib", "gpu/rank0/util_pct", "pace/rank0/data_wait_s"} <= set(events.Tags()["scalars"])
    assert not any(tag.startswith("gpu/rank1") for tag in events.Tags()["scalars"])
    assert events.Scalars("gpu/rank0/mem_gib")[-1].value == pytest.approx(11.5)
