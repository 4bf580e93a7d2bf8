"""Two Ray nodes that share no files, only a bucket: what a cloud cluster without NFS looks like.

The worker node runs in its own mount namespace with a tmpfs over the test's whole temporary
tree (the launch directory, the launcher's local copies, the corpus as it was made), so the only
way data, shape files, token lists, checkpoints and logs can travel between the launcher and the
two training workers is the S3 server on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import s3_local
from espnet3 import storage
from net_utils import join_node, kill_node, start_head, token_auth
from paths import TINY



def _unshare_hiding(directory: Path) -> tuple[str, ...]:
    """A command prefix that runs the rest in a mount namespace where ``directory`` is an empty tmpfs."""
    prefix = ("unshare", "--mount", "--propagation", "private", "sh", "-c",
              f'mount -t tmpfs none "{directory}" && exec "$@"', "sh")
    probe = subprocess.run([*prefix, "sh", "-c", f'test -z "$(ls -A "{directory}")"'], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot start a node in its own mount namespace (unshare/mount refused: "
                    f"{(probe.stderr or 'exit ' + str(probe.returncode)).strip()[:200]})")
    return prefix


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_workers_on_a_node_that_cannot_see_the_launch_directory_train_from_the_bucket(
        s3_bucket, s3_server, digits, tmp_path, tmp_path_factory, monkeypatch):
    hidden = tmp_path_factory.getbasetemp()
    data_uri = s3_local.upload_corpus(s3_server, s3_bucket, digits, "dump/raw")
    prefix = _unshare_hiding(hidden)

    ray_tmp = Path(f"/tmp/e3ns{os.getpid()}")  # outside the hidden tree: Ray's own session files
    # A busy suite can keep a node's dashboard agent from writing its ports for longer than the
    # raylet waits by default: the worker node's raylet then aborts ("Timed out waiting for file",
    # seen in a fresh-clone run) and the workers are never placed.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_TMPDIR": str(ray_tmp), **token_auth(),
           "RAY_agent_register_timeout_ms": "300000"}
    env.pop("RAY_ADDRESS", None)
    head, address, _ = start_head(env, "--num-cpus=0")
    nodes = [head]
    run = f"s3://{s3_bucket}/exp/tiny"
    try:
        nodes.append(join_node(env, address, 2, "--num-cpus=2", cpus=2, prefix=prefix))
        proc = subprocess.run(
            [sys.executable, "-m", "espnet3.launch", "--config", str(TINY), "--num-gpus", "0", "--num-workers", "2",
             "--address", address, f"exp_dir={run}", "~data.digits", f"data.train={data_uri}/train",
             f"data.valid={data_uri}/valid", f"data.test.test={data_uri}/test", "trainer.max_epochs=1",
             "timeouts.worker_start_s=180"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540,
        )
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    finally:
        for node in reversed(nodes):
            kill_node(node)
        shutil.rmtree(ray_tmp, ignore_errors=True)

    names = {k[len("exp/tiny/"):] for k in s3_local.objects(s3_server, s3_bucket, "exp/tiny/")}
    for name in ("train.yaml", "train_result.json", "last.pth", "config.yaml", "stats/train/speech_shape",
                 "tokens.txt", "infer/test/text", "infer/test/metrics.json", "infer/logs/worker0.log",
                 "logs/rank0.log", "logs/rank1.log"):
        assert name in names, (name, sorted(names))
    assert any(n.startswith("valid.loss.ave_") for n in names), sorted(names)
    assert any(n.startswith("checkpoint_") and n.endswith("/checkpoint.ckpt") for n in names)
    assert any(n.startswith("tensorboard/events.out.tfevents.") for n in names)
    # The rank logs were written on the hidden node only: the launcher's local copy never had them.
    local = storage.local_copy(run)
    assert not (local / "logs" / "rank0.log").exists() and not (local / "logs" / "rank1.log").exists()
    for rank in (0, 1):
        assert "=====" in storage.read_text(f"{run}/logs/rank{rank}.log")
    result = json.loads(storage.read_text(f"{run}/train_result.json"))
    assert result["metrics"]["epoch"] == 0 and result["averaged_model"].startswith(f"{run}/valid.loss.ave_")
    scores = json.loads(storage.read_text(f"{run}/infer/test/metrics.json"))
    assert scores, "the inference actor on the hidden node decoded the test set from the bucket"
