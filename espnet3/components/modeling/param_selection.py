"""Select parameters by dotted-name prefix, for freezing and for per-optimizer groups.

Prefixes match on dot boundaries only, so ``encoder`` never captures
``encoder2.weight``; substring matching (as upstream does) silently hands a
parameter to the wrong optimizer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import nn

from espnet3.components.modeling.optimization_spec import OptimizerSpec

PREVIEW = 8


def matches(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


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
        hits = [name for name, spec in specs.items() if any(matches(pname, p) for p in spec.params)]
        owners[pname] = hits
        if len(hits) == 1:
            groups[hits[0]].append((pname, param))
    uncovered = [p for p, hits in owners.items() if not hits]
    if uncovered:
        raise ValueError(
            f"Trainable parameters not selected by any `optimizers.<name>.params`: {_preview(uncovered)}. "
            "Add their prefix to one optimizer's `params`, or freeze them with `model.freeze_param`."
        )
    doubled = {p: hits for p, hits in owners.items() if len(hits) > 1}
    if doubled:
        example = next(iter(doubled.items()))
        raise ValueError(
            f"Parameters selected by more than one optimizer: {_preview(doubled)} "
            f"(e.g. {example[0]!r} by {example[1]}). Make the `params` prefixes disjoint."
        )
    empty = [name for name, group in groups.items() if not group]
    if empty:
        raise ValueError(
            f"`optimizers.{empty[0]}.params` {specs[empty[0]].params} matches no trainable parameter; "
            f"top-level modules are: {_preview(sorted({p.split('.')[0] for p in owners}))}."
        )
    return groups
