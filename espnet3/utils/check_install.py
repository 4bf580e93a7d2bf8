"""Post-install sanity check run by ``make install``.

A pip resolution that silently swaps torch, or an espnet release that ships its own
``espnet3`` package, breaks everything in confusing ways later; fail the install
instead, with the reason.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# espnet 202609 and later ship a top-level ``espnet3`` package of their own.
ESPNET_FIRST_WITH_ESPNET3 = 202609


def problems() -> list[str]:
    found = []
    import espnet3

    package_dir = Path(espnet3.__file__).resolve().parent
    if package_dir != REPO_ROOT / "espnet3":
        found.append(
            f"`import espnet3` resolves to {package_dir}, not this repository "
            f"({REPO_ROOT / 'espnet3'}); reinstall with `make clean-venv install`."
        )
    espnet_version = metadata.version("espnet")
    if int(espnet_version.split(".")[0]) >= ESPNET_FIRST_WITH_ESPNET3:
        found.append(
            f"espnet {espnet_version} is installed; releases >= {ESPNET_FIRST_WITH_ESPNET3} "
            "overwrite espnet3. Pin espnet<202609 (see requirements/espnet.txt)."
        )
    torch_version = metadata.version("torch").split("+")[0]
    torchaudio_version = metadata.version("torchaudio").split("+")[0]
    if torch_version != torchaudio_version:
        found.append(
            f"torch {torch_version} and torchaudio {torchaudio_version} differ; "
            "torchaudio only loads against the same torch release."
        )
    return found


def main() -> int:
    found = problems()
    if not found:
        from espnet3.utils.espnet2_imports import import_espnet2

        import_espnet2("espnet2.tasks.asr")
        print("espnet3 install OK:", ", ".join(
            f"{name} {metadata.version(name)}" for name in ("torch", "torchaudio", "lightning", "ray", "espnet")
        ))
        return 0
    for problem in found:
        print("install check failed:", problem, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
