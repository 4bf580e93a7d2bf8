"""``gpu:``: how a GPU worker runs the step, so that it is not bound by kernel launches.

A CPU run ignores the block. On GPU workers:

- ``tf32``: float32 matmuls and convolutions on TensorFloat-32 tensor cores
  (``torch.set_float32_matmul_precision("high")``, as Lightning suggests); ~10 bits of mantissa,
  which training tolerates and which is what "32-true" precision costs on Ampere and later GPUs.
- ``fused_optimizer``: ``fused=True`` for ``torch.optim`` optimizers that take it (Adam, AdamW,
  SGD, ...), one kernel for the whole update instead of one per parameter group and op. Measured
  on an H200 for the default job's model: faster at small batches, slower at 256 utterances,
  hence off by default.
- ``compile``: ``nn.Module.compile`` of the model (in place, so checkpoints keep their keys);
  worth it when batch shapes repeat (bucketed lengths), a recompilation per new shape otherwise.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from torch import nn

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class GPUOptions:
    tf32: bool = True
    fused_optimizer: bool = False
    compile: bool = False
    compile_mode: str = "default"

    @classmethod
    def from_config(cls, block: Mapping[str, Any] | None) -> GPUOptions:
        """Parse ``cfg.gpu``; a wrong key or value raises ``ValueError`` naming ``gpu.<key>``."""
        block = dict(block or {})
        names = [f.name for f in fields(cls)]
        for key, value in block.items():
            if key not in names:
                import difflib

                close = difflib.get_close_matches(key, names, n=1)
                raise ValueError(
                    f"`gpu.{key}` is not a GPU option" + (f" (did you mean `gpu.{close[0]}`?)" if close else "")
                    + f"; valid: {', '.join(names)}"
                )
            if key != "compile_mode" and not isinstance(value, bool):
                raise ValueError(f"`gpu.{key}` must be true or false, got {value!r}")
        if block.get("compile_mode", "default") not in COMPILE_MODES:
            raise ValueError(f"`gpu.compile_mode` must be one of {', '.join(COMPILE_MODES)}, got {block['compile_mode']!r}")
        return cls(**block)

    def apply_to_process(self) -> None:
        """Process-wide settings, made once per GPU worker before the model is built."""
        import torch

        if self.tf32:
            torch.set_float32_matmul_precision("high")
            torch.backends.cudnn.allow_tf32 = True

    def optimizer_configs(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """``cfg`` with ``fused: true`` in every optimizer block whose class takes it and does not set it."""
        if not self.fused_optimizer:
            return cfg
        cfg = dict(cfg)
        if isinstance(cfg.get("optimizer"), Mapping):
            cfg["optimizer"] = _fused(cfg["optimizer"])
        if isinstance(cfg.get("optimizers"), Mapping):
            cfg["optimizers"] = {
                name: {**spec, "optimizer": _fused(spec["optimizer"])} if isinstance(spec, Mapping) and "optimizer" in spec else spec
                for name, spec in cfg["optimizers"].items()
            }
        return cfg

    def prepare_model(self, model: nn.Module) -> nn.Module:
        if self.compile:
            model.compile(mode=self.compile_mode)
        return model


def _fused(block: Mapping[str, Any]) -> Mapping[str, Any]:
    from espnet3.utils.instantiate import import_dotted

    if "fused" in block or "_target_" not in block:
        return block
    try:
        takes_fused = "fused" in inspect.signature(import_dotted(block["_target_"])).parameters
    except (ImportError, AttributeError, ValueError, TypeError):
        return block
    return {**block, "fused": True} if takes_fused else block
