"""Padded-frame fraction of length-sorted numel batching vs random batching of the same batch sizes.

    python benchmarks/batching.py data/digits/train [--batch-bins 1000000] [--seed 0]

Random batching here keeps numel's batch sizes and shuffles which utterances share a batch, so the
difference is what sorting by length alone saves in padding (wasted frontend/encoder compute).
"""

from __future__ import annotations

import argparse

import numpy as np

from espnet3.data.datadir import read_datadir
from espnet3.data.sampler import make_batches, padding_fraction


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datadir", help="Kaldi-style data directory (wav.scp, text)")
    parser.add_argument(
        "--batch-bins", type=int, default=1_000_000, help="numel batch_bins (speech samples + characters)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    datadir = read_datadir(args.datadir)
    utts = datadir.utt_ids
    samples = [datadir.num_samples[u] for u in utts]
    # Characters stand in for tokens: no token list is needed to measure padding.
    lengths = [(n, len(datadir.text[u])) for n, u in zip(samples, utts)]
    sorted_batches = make_batches(lengths, "numel", batch_bins=args.batch_bins)

    order = np.random.default_rng(args.seed).permutation(len(utts)).tolist()
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
