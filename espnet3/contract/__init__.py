"""Upstream ESPnet3's declarations, at its import path: what a recipe's dataset items hold (``Field``)."""

from espnet3.contract.field import Field

__all__ = ["Field"]
