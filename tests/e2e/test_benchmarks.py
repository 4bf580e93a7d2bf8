"""The benchmarks run at a tiny size and report what they promise (timings are not checked)."""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import comparisons, harness, report
from benchmarks.fixture import make_fixture
from paths import REPO



def _step(start, end, utts, padded, consensus=True):
    return {"start": start, "end": end, "utts": utts, "padded": padded, "real": padded, "consensus": consensus}


def test_throughput_counts_every_rank_after_warmup():
    ranks = [
        {"rank": 0, "steps": [_step(0, 1, 4, 10), _step(1, 2, 4, 10), _step(2, 3, 4, 10)]},
        {"rank": 1, "steps": [_step(0, 1, 2, 10), _step(1, 2, 2, 10), _step(2, 3, 2, 10)]},
    ]
    assert harness.throughput(ranks, warmup=1) == pytest.approx(12 / 2)


def test_step_profile_splits_the_step_from_the_time_between_steps():
    run = {"ranks": [{"rank": 0, "steps": [_step(0, 1, 1, 1), _step(1.01, 2.01, 1, 1), _step(2.03, 3.03, 1, 1),
                                           _step(3.04, 4.04, 1, 1)]}]}
    assert comparisons.step_profile([run], warmup=1) == {"step_ms": 1000.0, "between_steps_ms": 15.0}


def test_consensus_costs_split_by_flag_and_normalise_by_largest_batch():
    ranks = [
        {"rank": 0, "steps": [_step(0, 2, 1, 100, True), _step(2, 3, 1, 100, False)]},
        {"rank": 1, "steps": [_step(0, 2, 1, 200, True), _step(2, 3, 1, 50, False)]},
    ]
    costs = comparisons.consensus_costs(ranks, warmup=0)
    assert costs[True] == [pytest.approx(2 / 200)] and costs[False] == [pytest.approx(1 / 100)]


def test_notice_to_checkpoint_reads_the_logged_steps_and_the_notice_record(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "exp" / "tensorboard" / "version_0"))
    for step in (3, 1, 2):  # written out of order: read back in step order
        writer.add_scalar("train/loss", 1.0, step, walltime=100.0 + step)
        writer.add_scalar("valid/loss", 1.0, step, walltime=500.0)
    writer.close()
    assert comparisons.train_step_times(tmp_path / "exp" / "tensorboard") == [101.0, 102.0, 103.0]
    for name, metrics in (("checkpoint_a", {"step": 2}), ("checkpoint_b", {"step": 3, "preemption": {"time": 7.0}})):
        (tmp_path / "exp" / name).mkdir()
        (tmp_path / "exp" / name / "metrics.json").write_text(json.dumps(metrics))
    assert comparisons.notice_record(tmp_path / "exp") == {"time": 7.0}
    assert comparisons.notice_record(tmp_path / "missing") is None


def test_markdown_table_has_a_row_per_measure_and_shows_skips():
    results = {
        "throughput": {"espnet3_utt_per_s": 9.8, "lightning_ddp_utt_per_s": 10.0, "ratio": 0.98, "met": True},
        "sweep": {"skipped": "no sweep CLI"},
    }
    table = report.format_markdown(results, "header")
    assert "| throughput | ratio espnet3 / Lightning (goal >= 0.98) | 0.98 |" in table
    assert "| sweep | skipped | no sweep CLI |" in table


def test_upstream_skips_cleanly_without_an_environment(tmp_path):
    class NoUpstream:
        upstream_python = None

    assert "skipped" in comparisons.compare_upstream(NoUpstream())


def test_batching_speed_runs_on_a_tiny_corpus(tmp_path):
    fixture = make_fixture(tmp_path / "work", tmp_path / "data", "tiny", num_train=24, batch_bins=200_000)
    out = tmp_path / "speed.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.batch_speed", "--config", str(fixture.config), "--batches", "2",
         "--out", str(out)],
        check=True, cwd=REPO, env=harness.bench_env(), capture_output=True, timeout=120,
    )
    result = json.loads(out.read_text())
    assert result["padded_fraction_random"] > result["padded_fraction_sorted"]
    assert result["utt_per_s_sorted"] > 0 and result["utt_per_s_random"] > 0


def test_module_overhead_trains_espnet3s_module_and_the_bare_one_on_the_same_batches(tmp_path):
    """The two sides of `module_overhead` (plain Lightning, one process here) record every step."""
    from benchmarks.fixture import load_bench_config
    from benchmarks.plan import make_plan

    fixture = make_fixture(tmp_path / "work", tmp_path / "data", "tiny", num_train=24, batch_bins=200_000)
    cfg = load_bench_config(fixture.config, [f"exp_dir={tmp_path / 'unused'}"])
    plan = make_plan(cfg, 1, 3, tmp_path / "plan.json")
    steps = {}
    # Each module once and each model once (a run is ~15 s of imports: not all four pairs).
    for module, toy in (("espnet3", ["--toy-model"]), ("plain", [])):
        out = tmp_path / f"{module}{toy}"
        subprocess.run(
            [sys.executable, "-m", "benchmarks.plain_ddp", "--plan", str(plan), "--out", str(out), "--devices", "1",
             "--module", module, *toy],
            check=True, cwd=REPO, env=harness.bench_env(), capture_output=True, timeout=300,
        )
        steps[module, bool(toy)] = harness.load_ranks(out)[0]["steps"]
    assert all(len(s) == 3 for s in steps.values())
    assert len({tuple(s["utts"] for s in side) for side in steps.values()}) == 1, "the same batches on every side"
    assert comparisons.median_step_ms([{"steps": steps["espnet3", True]}], warmup=1) > 0


def test_cpu_shares_are_per_process_fractions_of_a_core_over_the_interval():
    from benchmarks.cpu_shares import TICKS_PER_S, cpu_times, shares

    before = {1: (0, "worker"), 2: (10, "raylet"), 3: (5, "gone")}
    after = {1: (2 * TICKS_PER_S, "worker"), 2: (10 + TICKS_PER_S // 10, "raylet"), 4: (99, "new")}
    rows = shares(before, after, seconds=2.0)
    assert [(pid, name) for _, pid, name in rows] == [(1, "worker"), (2, "raylet")]
    assert rows[0][0] == pytest.approx(100.0) and rows[1][0] == pytest.approx(5.0, abs=0.6)
    assert os.getpid() in cpu_times()


# ------------------------------------------------------------------ GPU pieces, run on CPU
def test_gpu_comparisons_skip_cleanly_without_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in comparisons.GPU_COMPARISONS:
        assert "no CUDA device" in comparisons.RUNNERS[name](None)["skipped"]


def test_model_step_times_every_batch_size_and_optimizer(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.model_step", "--config", "configs/tiny_asr.yaml", "--device", "cpu",
         "--sizes", "2", "4", "--samples", "4000", "--steps", "2", "--warmup", "1"],
        cwd=REPO, env=harness.bench_env(), capture_output=True, text=True, timeout=300,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["device"] == "cpu" and set(result["sizes"]) == {"2", "4"}
    for row in result["sizes"].values():
        assert {"foreach", "fused"} == set(row) and all(r["step_ms"] > 0 for r in row.values())


def test_the_nan_check_passes_on_cpu_as_it_must_on_cuda(capsys):
    from benchmarks import gpu_nan_check

    assert gpu_nan_check.main(["--accelerator", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["ok"] and result["seen"]["unchanged_steps"] == [2, 5, 7]


def test_gpu_summary_averages_utilisation_inside_the_training_window(tmp_path):
    import datetime

    from benchmarks.gpu_summary import summarise, utilisation

    base = datetime.datetime(2026, 11, 26, 8, 0, 0)
    rows = [f"{(base + datetime.timedelta(seconds=s)).strftime('%Y/%m/%d %H:%M:%S.%f')[:-3]}, {u}, {m}"
            for s, u, m in ((0, 0, 500), (10, 80, 9000), (11, 60, 9100), (30, 0, 500))]
    (tmp_path / "smi.csv").write_text("\n".join(rows) + "\n")
    window = (base.timestamp() + 5, base.timestamp() + 20)
    used = utilisation(tmp_path / "smi.csv", window)
    assert used["mean"] == 70 and used["samples"] == 2 and used["peak_memory_mib"] == 9100
    assert "| GPU utilisation during training | n/a |" in summarise(tmp_path)  # no run, no window


def test_gpu_check_script_is_valid_bash_and_runs_every_check():
    script = (REPO / "benchmarks" / "gpu_check.sh").read_text()
    assert subprocess.run(["bash", "-n", str(REPO / "benchmarks" / "gpu_check.sh")]).returncode == 0
    for piece in ("--num-gpus 1", "gpu_nan_check", "--only gpu_throughput gpu_step", "model_step --sizes 16 64 256",
                  "benchmarks.gpu_summary"):
        assert piece in script


# One comparison through espnet3 on Ray and one without Ray; the others take ~9 minutes more at the
# tiny size (`python -m benchmarks.run --size tiny` runs them all). Their pieces are tested above.
SUITE_COMPARISONS = ("nan_consensus", "batching")


@pytest.mark.slow
def test_run_tiny_measures_and_tabulates_the_training_comparisons(tmp_path):
    """The CLI end to end at the tiny size: each comparison printed as measured, then the table."""
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--size", "tiny", "--work-dir", str(tmp_path / "work"),
         "--results-dir", str(results), "--only", *SUITE_COMPARISONS],
        cwd=REPO, env=harness.bench_env(), capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    printed = [line for line in proc.stdout.splitlines() if line.startswith("[bench] ") and ": {" in line]
    assert [line.split(":")[0] for line in printed] == [f"[bench] {name}" for name in SUITE_COMPARISONS]
    assert proc.stdout.index(printed[-1]) < proc.stdout.index("| nan_consensus |")
    data = json.loads((results / "latest.json").read_text())
    for name in SUITE_COMPARISONS:
        assert "error" not in data[name], data[name]
        assert "ratio" in data[name]
    assert {"step_time_on_us_per_ksample", "step_time_off_us_per_ksample", "collective_us"} <= set(data["nan_consensus"])
    assert (results / "latest.md").read_text().startswith("# espnet3 benchmarks")
