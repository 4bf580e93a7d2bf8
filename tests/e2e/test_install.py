"""The installed environment is the one this repository needs: Python 3.12/3.13, espnet 202611's
espnet2 and egs3, and this checkout's espnet3 in place of the one the espnet wheel bundles."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import espnet3
from espnet3.utils.check_install import problems
from paths import REPO



def test_espnet3_resolves_to_this_repository():
    assert Path(espnet3.__file__).resolve() == REPO / "espnet3" / "__init__.py"


def test_python_and_espnet_are_the_current_release_pair():
    assert sys.version_info[:2] in ((3, 12), (3, 13))
    assert int(metadata.version("espnet")) >= 202611
    assert problems() == []


def test_the_release_egs3_templates_stay_importable():
    import importlib.resources

    conf = importlib.resources.files("egs3.TEMPLATE.esp2_asr") / "conf" / "training.yaml"
    assert conf.is_file()
    assert "num_device" in conf.read_text()


def test_a_shadowing_espnet3_fails_the_check_with_the_fix(tmp_path):
    """What a later `pip install espnet` does: another espnet3 package ahead of this checkout."""
    (tmp_path / "espnet3").mkdir()
    (tmp_path / "espnet3" / "__init__.py").write_text("")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    proc = subprocess.run([sys.executable, str(REPO / "espnet3" / "utils" / "check_install.py")],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 1
    assert f"resolves to {tmp_path / 'espnet3'}" in proc.stderr
    assert "run `make install`" in proc.stderr


def test_make_install_refuses_another_python_with_the_choices(tmp_path):
    python311 = subprocess.run([str(REPO / "tools" / "find-python"), "python3.11"], capture_output=True, text=True)
    if python311.returncode != 0:
        import pytest

        pytest.skip("no python3.11 on this machine to try")
    proc = subprocess.run(["make", "-C", str(REPO), "install", "PYTHON=python3.11", f"VENV={tmp_path}/venv"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "needs Python 3.12 or 3.13" in proc.stderr
    assert "PYTHON=python3.12" in proc.stderr
    assert not (tmp_path / "venv").exists()


def test_find_python_finds_pyenv_interpreters_that_are_not_the_active_version():
    for name, version in (("python3.12", "3.12"), ("python3.13", "3.13")):
        proc = subprocess.run([str(REPO / "tools" / "find-python"), name], capture_output=True, text=True)
        if proc.returncode != 0:
            continue  # not installed here; the Makefile then names the fix
        out = subprocess.run([proc.stdout.strip(), "-c", "import sys; print(sys.version)"],
                             capture_output=True, text=True)
        assert out.stdout.startswith(version)


def test_espnet2_asr_task_imports_quietly_and_offline():
    code = "from espnet3.utils.espnet2_imports import import_espnet2; print(import_espnet2('espnet2.tasks.asr').ASRTask.__name__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ASRTask"
    assert "nltk_data" not in proc.stderr and "Flash Attention" not in proc.stdout


def test_plain_espnet2_import_works_in_the_installed_environment():
    proc = subprocess.run([sys.executable, "-c", "from espnet2.tasks.asr import ASRTask"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
