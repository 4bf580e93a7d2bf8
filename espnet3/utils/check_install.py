"""Post-install check run by ``make install``; also the fix for a shadowed ``espnet3``.

espnet 202609 and later ship a top-level ``espnet3`` package of their own (upstream's
ESPnet3). Installed into site-packages, it comes before this checkout on ``sys.path``, so
``import espnet3`` would silently be upstream's code. ``make install`` therefore removes the
wheel's copy (``--replace-bundled``) and keeps everything else of the release: ``espnet2``
(the models) and ``egs3`` (the recipe TEMPLATEs). Run as a file (``python
espnet3/utils/check_install.py``), this check works even when the shadowing copy is back
(say after a later ``pip install espnet``): ``python -m espnet3.utils.check_install`` would
then resolve to upstream's package, which has no such module.

A pip resolution that silently swaps torch breaks everything in confusing ways later, too;
fail the install instead, with the reason.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
OUR_PACKAGE = REPO_ROOT / "espnet3"
FIX = "run `make install` in the espnet3 checkout (it removes espnet's bundled copy again)"


def resolved_espnet3() -> Path | None:
    """Where ``import espnet3`` goes from a fresh interpreter with this environment's path."""
    spec = importlib.util.find_spec("espnet3")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).resolve().parent


def bundled_espnet3() -> Path | None:
    """The ``espnet3`` directory that the installed espnet wheel put into site-packages."""
    try:
        files = metadata.files("espnet") or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if str(file).replace("\\", "/") == "espnet3/__init__.py":
            directory = Path(file.locate()).resolve().parent
            return directory if directory.is_dir() else None
    return None


def replace_bundled() -> Path | None:
    """Remove the espnet wheel's ``espnet3`` package; return what was removed."""
    bundled = bundled_espnet3()
    if bundled is None or bundled == OUR_PACKAGE:
        return None
    shutil.rmtree(bundled)
    importlib.invalidate_caches()
    return bundled


def problems() -> list[str]:
    found = []
    package_dir = resolved_espnet3()
    if package_dir != OUR_PACKAGE:
        bundled = bundled_espnet3()
        why = (
            " (espnet's bundled ESPnet3, put back by a later `pip install espnet`)"
            if bundled is not None and bundled == package_dir else ""
        )
        found.append(
            f"`import espnet3` resolves to {package_dir}{why}, not this checkout ({OUR_PACKAGE}); {FIX}."
        )
    if importlib.util.find_spec("egs3") is None:
        found.append(
            "the `egs3` package (espnet's recipe TEMPLATEs, needed for egs3 recipes) is missing: "
            "install espnet >= 202611 with `make install`."
        )
    torch_version = metadata.version("torch").split("+")[0]
    torchaudio_version = metadata.version("torchaudio").split("+")[0]
    if torch_version != torchaudio_version:
        found.append(
            f"torch {torch_version} and torchaudio {torchaudio_version} differ; "
            "torchaudio only loads against the same torch release."
        )
    return found


def main(argv: list[str]) -> int:
    if "--replace-bundled" in argv:
        removed = replace_bundled()
        if removed is not None:
            print(f"removed espnet's bundled espnet3 package ({removed}): this checkout's espnet3 replaces it")
    found = problems()
    for problem in found:
        print("install check failed:", problem, file=sys.stderr)
    if found:
        return 1
    from espnet3.utils.espnet2_imports import import_espnet2

    import_espnet2("espnet2.tasks.asr")
    print("espnet3 install OK:", ", ".join(
        f"{name} {metadata.version(name)}" for name in ("torch", "torchaudio", "lightning", "ray", "espnet")
    ), f"(Python {sys.version.split()[0]}, espnet3 from {OUR_PACKAGE})")
    return 0


if __name__ == "__main__":
    # sys.path[0] is this file's folder (run as a file) or the working directory (`-m`):
    # drop it so that `find_spec("espnet3")` sees what a Ray worker, whose working
    # directory is elsewhere, sees.
    sys.path.pop(0)
    sys.exit(main(sys.argv[1:]))
