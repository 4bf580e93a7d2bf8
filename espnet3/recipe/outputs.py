"""An egs3 recipe's inference outputs where upstream writes them, after the run's infer and measure.

The run decodes and scores in its own layout (``exp_dir/infer/<split>/``: Kaldi tables such as
``text``, and ``metrics.json`` per split), which packing and resuming read. A recipe's users and
their scripts look where upstream's runner writes: ``${inference_dir}/<test>/<field>.scp`` (one
``utt_id value`` line per utterance) and ``${inference_dir}/metrics.json``
(``{metric class: {test: {"WER": percent}}}``, rounded to 2 places as upstream's metrics report).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

from hydra.utils import get_class

from espnet3.recipe.convert import METRICS, RoleConfig, output_keys, plain, test_splits
from espnet3.stages.evaluation import INFER_DIR
from espnet3.stages.infer import MANIFEST
from espnet3.stages.measure import SCORES_FILE
from espnet3.storage import atomic_write, atomic_write_json

# The run's own bookkeeping in each split directory, not an inference output.
RUN_FILES = (SCORES_FILE, MANIFEST)


def publish(inference: RoleConfig, metrics: RoleConfig | None, exp_dir: Path, recipe_dir: Path) -> Path:
    """Copy the run's tables and scores into ``inference_dir``; returns it."""
    inference_dir = Path(recipe_dir, str(inference.values["inference_dir"])).resolve()
    infer = Path(exp_dir) / INFER_DIR
    scores: dict[str, Mapping[str, float]] = {}
    keys = output_keys(inference)
    for name, split in test_splits(inference).items():
        source = infer / split
        if not source.is_dir():
            continue
        target = inference_dir / name
        target.mkdir(parents=True, exist_ok=True)
        for table in sorted(source.iterdir()):
            if keys is not None and table.name.removesuffix(".scp") not in keys:
                continue  # upstream's output_keys: only the outputs listed (a table's audio dir goes with it)
            if table.is_file() and table.name not in RUN_FILES:
                atomic_write(target / (table.name if table.suffix == ".scp" else f"{table.name}.scp"),
                             table.read_text(), upload=False)
            elif table.is_dir() and table.name != "shards":  # a table's audio or arrays (wav/, ...)
                shutil.copytree(table, target / table.name, dirs_exist_ok=True)
        if (source / SCORES_FILE).is_file():
            scores[name] = json.loads((source / SCORES_FILE).read_text())
    if metrics is not None and scores:
        results = {}
        for entry in plain(metrics.values.get("metrics")) or []:
            target = entry["metric"]["_target_"]
            ours = get_class(METRICS[target]).name  # the score's key in the run's metrics.json
            results[target] = {name: {ours.upper(): round(100 * split_scores[ours], 2)}
                               for name, split_scores in scores.items() if ours in split_scores}
        atomic_write_json(inference_dir / "metrics.json", results)
    return inference_dir
