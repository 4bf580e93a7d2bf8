"""The evaluate stage: greedy CTC decoding of each test split, CER/WER, per-utterance output.

Greedy CTC, not attention beam search: at the default job's budget it is both the
faster and the more accurate decoder (see shared notes), and it needs no LM.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from espnet3.data.plan import DataPlan
from espnet3.utils.atomic import atomic_write, atomic_write_json

BLANK_ID = 0


@dataclass
class SplitScore:
    split: str
    cer: float
    wer: float
    num_utterances: int


def greedy_ctc(log_probs_argmax: torch.Tensor, length: int) -> list[int]:
    """Collapse repeats, drop blanks."""
    out, previous = [], None
    for token in log_probs_argmax[:length].tolist():
        if token != previous and token != BLANK_ID:
            out.append(token)
        previous = token
    return out


def edit_distance(a: list[str], b: list[str]) -> int:
    import editdistance

    return int(editdistance.eval(a, b))


def _check_decodable(model: torch.nn.Module) -> None:
    if not (hasattr(model, "encode") and getattr(model, "ctc", None) is not None):
        raise TypeError(
            f"The evaluate stage decodes with greedy CTC and needs an ESPnet2 ASR model with "
            f"`encode()` and a `ctc` module; {type(model).__name__} has not. Leave `evaluate` out "
            "of --stages for this model."
        )


def _tokenizer(plan: DataPlan):
    from espnet3.data.tokenizer import TextTokenizer

    stream = next((s for s in plan.token_streams if s.key == "token_list"), None)
    if stream is None:
        raise ValueError("The evaluate stage decodes token ids and needs a token list (`data.token_list`).")
    return TextTokenizer.from_stream(stream)


@torch.no_grad()
def evaluate(cfg: DictConfig, config_dir: Path, model_file: Path, plan: DataPlan) -> list[SplitScore]:
    from espnet3.export import load_model_state
    from espnet3.utils.task_utils import build_model

    if not plan.data.test:
        raise ValueError("`data.test` names no evaluation split; add e.g. `data.test: {test: data/digits/test}`.")
    model = build_model(cfg, config_dir)
    _check_decodable(model)
    model.load_state_dict(load_model_state(model_file))
    model.eval()
    tokenizer = _tokenizer(plan)
    scores = []
    for split in plan.data.test:
        out_dir = Path(cfg.exp_dir) / "evaluate" / split
        out_dir.mkdir(parents=True, exist_ok=True)
        char_err = char_total = word_err = word_total = 0
        lines = []
        for ids, batch in plan.dataloader(split):
            encoded, lengths = model.encode(batch["speech"], batch["speech_lengths"])
            best = model.ctc.argmax(encoded)
            for i, utt in enumerate(ids):
                hyp = tokenizer.decode(greedy_ctc(best[i], int(lengths[i])))
                ref = tokenizer.decode(t for t in batch["text"][i].tolist() if t >= 0)
                char_err += edit_distance(list(hyp), list(ref))
                char_total += len(ref)
                word_err += edit_distance(hyp.split(), ref.split())
                word_total += len(ref.split())
                lines.append((utt, ref, hyp))
        lines.sort()
        atomic_write(out_dir / "hyp.txt", "".join(f"{u} {h}\n" for u, _, h in lines))
        atomic_write(out_dir / "ref.txt", "".join(f"{u} {r}\n" for u, r, _ in lines))
        score = SplitScore(split, char_err / max(char_total, 1), word_err / max(word_total, 1), len(lines))
        atomic_write_json(out_dir / "metrics.json", {k: v for k, v in asdict(score).items() if k != "split"})
        scores.append(score)
    return scores


def format_table(scores: list[SplitScore], model_file: Path) -> str:
    rows = [f"Evaluation of {model_file} (greedy CTC)", f"{'split':<12}{'utts':>8}{'CER %':>10}{'WER %':>10}"]
    rows += [f"{s.split:<12}{s.num_utterances:>8}{100 * s.cer:>10.2f}{100 * s.wer:>10.2f}" for s in scores]
    return "\n".join(rows)
