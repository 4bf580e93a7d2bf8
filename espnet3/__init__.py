"""espnet3: train ESPnet speech models on Ray, from one laptop core to a GPU cluster."""

__version__ = "0.1.0"
