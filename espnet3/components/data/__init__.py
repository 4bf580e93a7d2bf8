"""Upstream ESPnet3's recipe dataset API at its import paths: what egs3 recipes subclass and name."""
