"""The console pieces: the progress and validation lines, per-rank log files, which warnings reach the driver."""

from __future__ import annotations

import importlib
import os
import sys
import warnings

from espnet3.orchestration import console
from espnet3.orchestration.console import format_eta, progress_line, route_controller_output, validation_line
from espnet3.orchestration.worker_logs import output_to, raised_by_own_code, warnings_to_console


def test_progress_line_shows_epoch_step_loss_throughput_and_eta():
    line = progress_line(2, 10, 40, 400, {"loss": 12.34567}, 85.24, 310.2)
    assert line == "[espnet3] epoch 2/10 step 40/400 loss 12.3457 85.2 utt/s ETA 0:05:10"
    # max_epochs: -1 with max_steps unset: no totals, no ETA
    assert progress_line(3, None, 7, None, {}, 1.0, None) == "[espnet3] epoch 3 step 7 loss n/a 1.0 utt/s ETA ?"
    assert format_eta(3725) == "ETA 1:02:05"


def test_validation_line_lists_the_valid_metrics_without_their_prefix():
    line = validation_line(1, 2, 4, {"valid/loss": 5.0, "valid/acc": 0.25})
    assert line == "[espnet3] epoch 1/2 valid acc 0.2500 loss 5.0000 (step 4)"


def test_everything_a_process_writes_goes_to_its_rank_log(tmp_path):
    log = tmp_path / "logs" / "rank1.log"
    with output_to(log):
        print("from python")
        print("to stderr", file=sys.stderr)
        os.write(1, b"from C (file descriptor 1)\n")
    with output_to(log):  # a retried worker appends
        print("second attempt")
    text = log.read_text()
    for line in ("from python", "to stderr", "from C (file descriptor 1)", "second attempt"):
        assert line in text
    assert text.count("=====") == 4  # one header per attempt


def test_only_warnings_from_espnet3_or_the_recipe_reach_the_console(tmp_path, monkeypatch):
    recipe = tmp_path / "recipe_module.py"
    recipe.write_text("import warnings\ndef warn():\n    warnings.warn('learning rate looks too high')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sent = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with warnings_to_console(sent.append, rank=1):
            module = importlib.import_module("recipe_module")
            module.warn()
            module.warn()  # once on the console, however often it is raised
            warnings.warn_explicit("deprecated thing", DeprecationWarning, "/x/site-packages/lib/mod.py", 3)
    assert sent == ["[espnet3] rank 1 UserWarning: learning rate looks too high (recipe_module.py:3)"]
    assert raised_by_own_code(console.__file__)
    assert not raised_by_own_code(os.__file__)


def test_ray_train_actor_output_goes_to_the_driver_log(tmp_path, monkeypatch):
    from ray._private.ray_logging import WorkerStandardStreamDispatcher

    dispatcher = WorkerStandardStreamDispatcher()
    printed = []
    dispatcher.add_handler("ray_print_logs", printed.append)
    monkeypatch.setattr("ray._private.ray_logging.global_worker_stdstream_dispatcher", dispatcher)
    assert route_controller_output(tmp_path)
    dispatcher.emit({"actor_name": "TrainController", "pid": 7, "lines": ["E core_worker.cc: PreemptionWatcher ..."]})
    dispatcher.emit({"actor_name": "InferenceWorker", "pid": 8, "lines": ["decoding"]})
    assert "(TrainController pid=7) E core_worker.cc: PreemptionWatcher" in (tmp_path / "driver.log").read_text()
    assert [d["actor_name"] for d in printed] == ["InferenceWorker"]


def test_progress_records_are_written_off_the_training_thread_latest_first_and_never_raise(tmp_path, capsys):
    """Rank 0's status file (exp_dir/status/progress.json) is written by a thread of its own: the
    training step hands a record over and goes on; close() leaves the last record in the file; a
    write that fails (here: exp_dir is a file) is reported, not raised into training."""
    import json

    from espnet3.orchestration.status import ProgressWriter

    writer = ProgressWriter(tmp_path / "exp")
    for step in range(1, 101):
        writer.put({"step": step})
    writer.close()
    assert json.loads((tmp_path / "exp" / "status" / "progress.json").read_text())["step"] == 100

    (tmp_path / "not_a_dir").write_text("")
    broken = ProgressWriter(tmp_path / "not_a_dir")
    broken.put({"step": 1})
    broken.close()
    assert "could not write the status file" in capsys.readouterr().err
