"""``BaseDataset``: the class a recipe's ``Dataset`` subclasses to declare what its items hold."""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from torch.utils.data import Dataset

from espnet3.contract import Field


class BaseDataset(Dataset, ABC):
    """A map-style dataset whose items are dicts holding its declared ``fields``.

    A subclass declares ``fields`` (a tuple of :class:`~espnet3.contract.Field`, on the class or
    set on ``self`` in ``__init__``) and implements ``__getitem__``. As upstream, each instance's
    first item is checked against the declaration, so a wrong manifest fails at its first read
    rather than as a shape error inside a batch; later items are not checked (no per-item cost).
    Keys beyond the declared ones are allowed.
    """

    fields: ClassVar[tuple[Field, ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if vars(cls).get("fields") is not None:  # None: each instance sets self.fields
            _declared_fields(cls)
        if not getattr(cls.__getitem__, "_checks_first_item", False):
            cls.__getitem__ = _checking_first_item(cls.__getitem__)

    @abstractmethod
    def __getitem__(self, index: int) -> Mapping[str, Any]:
        """One item: a dict holding every declared field."""


def _declared_fields(owner: Any) -> tuple[Field, ...]:
    name = (owner if isinstance(owner, type) else type(owner)).__qualname__
    fields = getattr(owner, "fields", None)
    if fields is None:
        raise TypeError(
            f"{name} does not declare fields; add e.g. `fields = (Field('speech', 'audio'), "
            "Field('text', 'text'))` to the class (or set self.fields in __init__)"
        )
    if not isinstance(fields, tuple) or not fields or not all(isinstance(f, Field) for f in fields):
        raise TypeError(f"{name}.fields must be a non-empty tuple of espnet3.contract.Field, not {fields!r}")
    names = [f.name for f in fields]
    if len(set(names)) != len(names):
        raise TypeError(f"{name}.fields repeats a name: {names}; give each field its own name")
    return fields


def _checking_first_item(getitem: Callable) -> Callable:
    @functools.wraps(getitem)
    def wrapper(self: BaseDataset, index: int) -> Any:
        item = getitem(self, index)
        if not getattr(self, "_first_item_checked", False):
            _check_item(type(self).__qualname__, _declared_fields(self), item, index)
            self._first_item_checked = True
        return item

    wrapper._checks_first_item = True
    return wrapper


def _check_item(name: str, fields: tuple[Field, ...], item: Any, index: int) -> None:
    where = f"{name}[{index}]"
    if not isinstance(item, Mapping):
        raise ValueError(f"{where} is a {type(item).__name__}; __getitem__ must return a dict of the declared fields")
    for field in fields:
        if field.name not in item:
            if field.optional:
                continue
            raise ValueError(
                f"{where} lacks the declared field {field.name!r} ({field.kind}); its keys are {sorted(item)}. "
                f"Return it from __getitem__, or declare Field({field.name!r}, {field.kind!r}, optional=True)"
            )
        if not field.accepts(item[field.name]):
            raise ValueError(
                f"{where}: field {field.name!r} is declared {field.kind} but holds "
                f"{type(item[field.name]).__name__}; return a value of kind {field.kind} or change the declared kind"
            )
