"""The installed environment is the one this repository needs."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import espnet3
from espnet3.utils.check_install import problems

REPO = Path(__file__).resolve().parents[1]


def test_espnet3_resolves_to_this_repository():
    assert Path(espnet3.__file__).resolve() == REPO / "espnet3" / "__init__.py"


def test_espnet_is_pinned_below_the_release_that_ships_espnet3():
    assert int(metadata.version("espnet")) < 202609
    assert problems() == []


def test_espnet2_asr_task_imports_quietly_and_offline():
    code = "from espnet3.utils.espnet2_imports import import_espnet2; print(import_espnet2('espnet2.tasks.asr').ASRTask.__name__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ASRTask"
    assert "nltk_data" not in proc.stderr and "Flash Attention" not in proc.stdout


def test_plain_espnet2_import_works_in_the_installed_environment():
    proc = subprocess.run([sys.executable, "-c", "from espnet2.tasks.asr import ASRTask"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
