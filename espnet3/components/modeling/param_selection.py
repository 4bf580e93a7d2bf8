"""Select parameters by dotted name, for freezing and for per-optimizer groups.

Names match on dot boundaries only, so ``encoder`` never captures ``encoder2.weight``;
substring matching silently hands a parameter to the wrong optimizer. ``model.freeze_param``
takes prefixes (ESPnet2's meaning); ``optimizers.<name>.params`` may match anywhere in the name
(upstream ESPnet3's ``params: generator`` selects ``tts.generator.*``), and every trainable
parameter must be selected exactly once, so a name found in two places is an error, not a guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import nn

from espnet3.components.modeling.optimization_spec import OptimizerSpec

PREVIEW = 8


def matches(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def selects(name: str, pattern: str) -> bool:
    """``pattern``'s dotted segments appear, in order and whole, somewhere in ``name``."""
    return pattern == "" or f".{pattern}." in f".{name}."


def _preview(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(names[:PREVIEW])
    return shown + (f", ... ({len(names)} in all)" if len(names) > PREVIEW else "")


def freeze_parameters(model: nn.Module, prefixes: Iterable[str]) -> list[str]:
    """Freeze every parameter under ``prefixes`` (``model.freeze_param``); return their names."""
    prefixes = list(prefixes)
    frozen = []
    for prefix in prefixes:
        hit = [n for n, p in model.named_parameters() if matches(n, prefix)]
        if not hit:
            raise ValueError(
                f"`model.freeze_param` entry {prefix!r} matches no parameter of "
                f"{type(model).__name__}; top-level modules are: "
                f"{_preview(sorted({n.split('.')[0] for n, _ in model.named_parameters()}))}."
            )
        frozen.extend(hit)
    for name, param in model.named_parameters():
        if any(matches(name, prefix) for prefix in prefixes):
            param.requires_grad_(False)
    return sorted(set(frozen))


def assign_parameters(
    model: nn.Module, specs: Mapping[str, OptimizerSpec]
) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Split the trainable parameters among optimizers: each exactly once, none left over."""
    owners: dict[str, list[str]] = {}
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {name: [] for name in specs}
    for pname, param in model.named_parameters():
        if not param.requires_grad:
            continue
        hits = [name for name, spec in specs.items() if any(selects(pname, p) for p in spec.params)]
        owners[pname] = hits
        if len(hits) == 1:
            groups[hits[0]].append((pname, param))
    uncovered = [p for p, hits in owners.items() if not hits]
    if uncovered:
        raise ValueError(
            f"Trainable parameters not selected by any `optimizers.<name>.params`: {_preview(uncovered)}. "
            "Add their name (or a dotted part of it) to one optimizer's `params`, or freeze them with "
            "`model.freeze_param`."
        )
    doubled = {p: hits for p, hits in owners.items() if len(hits) > 1}
    if doubled:
        example = next(iter(doubled.items()))
        raise ValueError(
            f"Parameters selected by more than one optimizer: {_preview(doubled)} "
            f"(e.g. {example[0]!r} by {example[1]}). Make the `params` names select disjoint parameters."
        )
    empty = [name for name, group in groups.items() if not group]
    if empty:
        raise ValueError(
            f"`optimizers.{empty[0]}.params` {specs[empty[0]].params} matches no trainable parameter; "
            f"top-level modules are: {_preview(sorted({p.split('.')[0] for p in owners}))}."
        )
    return groups
