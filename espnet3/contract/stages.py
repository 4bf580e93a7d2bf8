"""``StageSpec``: one stage of an upstream ESPnet3 system, as its ``stages`` tuple declares it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class StageSpec:
    """A stage: the system method that runs it, the config role(s) it reads, and where it logs.

    Attributes:
        name: the stage method on the system (``"train"``).
        config: the config role, or a tuple of roles, each naming a ``<role>_config`` argument of
            the system (``"training"`` -> ``training_config``).
        log_dir: a dotted key in the first given role's config holding the stage's log directory
            (``"exp_dir"``, ``"pack.out_dir"``); ``None`` for the system's default.
    """

    name: str
    config: str | tuple[str, ...]
    log_dir: str | None = None

    @property
    def roles(self) -> tuple[str, ...]:
        """The config role(s) as a tuple, whichever form ``config`` was given in."""
        return (self.config,) if isinstance(self.config, str) else self.config

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"StageSpec name {self.name!r} must be the identifier of a system method")
        roles = self.roles
        if not isinstance(roles, tuple) or not roles or not all(isinstance(r, str) and r.isidentifier() for r in roles):
            raise ValueError(
                f"stage {self.name!r}: config {self.config!r} must be a role such as 'training' "
                "or a non-empty tuple of them"
            )
        if len(set(roles)) != len(roles):
            raise ValueError(f"stage {self.name!r}: config {self.config!r} repeats a role; list each once")
        if self.log_dir is not None and not isinstance(self.log_dir, str):
            raise TypeError(f"stage {self.name!r}: log_dir must be a dotted config key such as 'exp_dir', or None")
