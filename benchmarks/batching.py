"""Padded-frame fraction of length-sorted numel batching vs random batching of the same batch sizes.

    python benchmarks/batching.py data/digits/train [--batch-bins 1000000] [--seed 0]

Random batching here keeps numel's batch sizes and shuffles which utterances share a batch, so the
difference is what sorting by length alone saves in padding (wasted frontend/encoder compute).
"""

from __future__ import annotations

import argparse

import numpy as np

import tempfile
from pathlib import Path

import soundfile

from espnet3.data.checks import read_table
from espnet3.data.loader import LoaderSpec
from espnet3.data.sampler import espnet2_batches, padding_fraction


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datadir", help="Kaldi-style data directory (wav.scp, text)")
    parser.add_argument(
        "--batch-bins", type=int, default=1_000_000, help="numel batch_bins (speech samples + characters)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    wavs, _ = read_table(Path(args.datadir) / "wav.scp", "'<utt> <wav>'", allow_empty_value=False)
    texts, _ = read_table(Path(args.datadir) / "text", "'<utt> <text>'", allow_empty_value=True)
    utts = list(wavs)
    samples = {u: soundfile.info(wavs[u]).frames for u in utts}
    # Characters stand in for tokens: no token list is needed to measure padding.
    with tempfile.TemporaryDirectory() as tmp:
        speech, text = Path(tmp) / "speech_shape", Path(tmp) / "text_shape"
        speech.write_text("".join(f"{u} {samples[u]}\n" for u in utts))
        text.write_text("".join(f"{u} {max(1, len(texts[u]))}\n" for u in utts))
        sorted_batches = espnet2_batches(LoaderSpec(batch_bins=args.batch_bins), [speech, text])

    order = [utts[i] for i in np.random.default_rng(args.seed).permutation(len(utts))]
    random_batches, start = [], 0
    for batch in sorted_batches:
        random_batches.append(order[start : start + len(batch)])
        start += len(batch)
    sorted_pad = padding_fraction(sorted_batches, samples)
    random_pad = padding_fraction(random_batches, samples)
    print(f"{args.datadir}: {len(utts)} utterances, {len(sorted_batches)} batches, "
          f"mean batch size {len(utts) / len(sorted_batches):.1f} (batch_bins {args.batch_bins})")
    print(f"numel-sorted padded-frame fraction: {sorted_pad:.4f}")
    print(f"random       padded-frame fraction: {random_pad:.4f}")
    if sorted_pad:
        print(f"ratio random / sorted: {random_pad / sorted_pad:.1f}x")
    else:
        print("ratio: sorted batches have no padding")
    return {"sorted": sorted_pad, "random": random_pad}


if __name__ == "__main__":
    main()
