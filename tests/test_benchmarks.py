"""The benchmarks run at a tiny size and report what they promise (timings are not checked)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import run as bench_run
from benchmarks.fixture import make_fixture

REPO = Path(__file__).resolve().parent.parent


def _step(start, end, utts, padded, consensus=True):
    return {"start": start, "end": end, "utts": utts, "padded": padded, "real": padded, "consensus": consensus}


def test_throughput_counts_every_rank_after_warmup():
    ranks = [
        {"rank": 0, "steps": [_step(0, 1, 4, 10), _step(1, 2, 4, 10), _step(2, 3, 4, 10)]},
        {"rank": 1, "steps": [_step(0, 1, 2, 10), _step(1, 2, 2, 10), _step(2, 3, 2, 10)]},
    ]
    assert bench_run.throughput(ranks, warmup=1) == pytest.approx(12 / 2)


def test_consensus_costs_split_by_flag_and_normalise_by_largest_batch():
    ranks = [
        {"rank": 0, "steps": [_step(0, 2, 1, 100, True), _step(2, 3, 1, 100, False)]},
        {"rank": 1, "steps": [_step(0, 2, 1, 200, True), _step(2, 3, 1, 50, False)]},
    ]
    costs = bench_run.consensus_costs(ranks, warmup=0)
    assert costs[True] == [pytest.approx(2 / 200)] and costs[False] == [pytest.approx(1 / 100)]


def test_markdown_table_has_a_row_per_measure_and_shows_skips():
    results = {
        "throughput": {"espnet3_utt_per_s": 9.8, "lightning_ddp_utt_per_s": 10.0, "ratio": 0.98, "met": True},
        "sweep": {"skipped": "no sweep CLI"},
    }
    table = bench_run.format_markdown(results, "header")
    assert "| throughput | ratio espnet3 / Lightning (goal >= 0.98) | 0.98 |" in table
    assert "| sweep | skipped | no sweep CLI |" in table


def test_upstream_skips_cleanly_without_an_environment(tmp_path):
    class NoUpstream:
        upstream_python = None

    assert "skipped" in bench_run.compare_upstream(NoUpstream())


def test_batching_speed_runs_on_a_tiny_corpus(tmp_path):
    fixture = make_fixture(tmp_path / "work", tmp_path / "data", "tiny", num_train=24, batch_bins=200_000)
    out = tmp_path / "speed.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.batch_speed", "--config", str(fixture.config), "--batches", "2",
         "--out", str(out)],
        check=True, cwd=REPO, env=bench_run.bench_env(), capture_output=True, timeout=120,
    )
    result = json.loads(out.read_text())
    assert result["padded_fraction_random"] > result["padded_fraction_sorted"]
    assert result["utt_per_s_sorted"] > 0 and result["utt_per_s_random"] > 0


@pytest.mark.slow
def test_run_tiny_writes_every_comparison(tmp_path):
    """Every comparison at the tiny size, through the CLI (several minutes: Ray and DDP runs)."""
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--size", "tiny", "--work-dir", str(tmp_path / "work"),
         "--results-dir", str(results)],
        cwd=REPO, env=bench_run.bench_env(), capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| throughput |" in proc.stdout
    data = json.loads((results / "latest.json").read_text())
    assert set(bench_run.COMPARISONS) <= set(data)
    for name in ("throughput", "nan_consensus", "first_step", "scaling", "batching"):
        assert "error" not in data[name], data[name]
        assert "ratio" in data[name] or "ratio_cluster" in data[name]
    assert {"espnet3_utt_per_s", "lightning_ddp_utt_per_s", "ratio"} <= set(data["throughput"])
    assert "skipped" in data["upstream"]
    assert (results / "latest.md").read_text().startswith("# espnet3 benchmarks")
