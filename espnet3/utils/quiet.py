"""Keep the console readable: one copy of each message, no library noise nobody can act on."""

from __future__ import annotations

import logging
import warnings


def silence_library_noise() -> None:
    # Inside a Ray worker the root logger has Ray's console handler, so Lightning's
    # records would print twice (its own handler, then root's).
    logging.getLogger("lightning").propagate = False
    # Ray Train logs one INFO line per report and rank, on a logger named after its
    # file (so `ray.train` levels do not reach it).
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:
        pass
    else:
        context.logger.setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"espnet2\.")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*`weights_only` was not set.*")
