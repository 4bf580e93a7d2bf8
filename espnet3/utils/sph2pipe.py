"""``sph2pipe``: the part of LDC's SPHERE converter that recipes call, on soundfile (libsndfile).

egs3 builders and Kaldi-style ``wav.scp`` lines run ``sph2pipe -f wav -p -c 1 FILE.sph``, expecting
the binary from Kaldi's tools on ``PATH``; this command gives the same 16-bit PCM WAV without
building it. libsndfile reads PCM and mu-law SPHERE files, not shorten-compressed ones (LDC's
``.wv1``/``.wv2`` distributions): convert those with the original tool.
"""

from __future__ import annotations

import argparse
import io
import os
import sys

import soundfile


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sph2pipe", description="Convert a NIST SPHERE file to a 16-bit PCM WAV (written to stdout)."
    )
    parser.add_argument("-f", dest="format", default="wav", choices=["wav"], help="output format (only wav)")
    parser.add_argument("-p", action="store_true", help="16-bit PCM output (what this converter always writes)")
    parser.add_argument("-c", dest="channel", type=int, help="keep only this channel, counted from 1")
    parser.add_argument("infile", help="the .sph file")
    parser.add_argument("outfile", nargs="?", help="where to write the WAV (default: stdout)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        samples, rate = soundfile.read(args.infile, dtype="int16", always_2d=True)
    except (OSError, RuntimeError) as err:
        hint = " (is it shorten-compressed? convert it with LDC's sph2pipe)" if os.path.isfile(args.infile) else ""
        parser.exit(1, f"sph2pipe: cannot read {args.infile}: {err}{hint}\n")
    if args.channel is not None:
        if not 1 <= args.channel <= samples.shape[1]:
            channels = samples.shape[1]
            parser.error(f"-c {args.channel}: {args.infile} has {channels} channel(s); give 1 to {channels}")
        samples = samples[:, args.channel - 1 : args.channel]
    # libsndfile seeks back to finish the WAV header, which a pipe cannot do: write to memory first.
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    if args.outfile is None:
        sys.stdout.buffer.write(buffer.getvalue())
        sys.stdout.buffer.flush()
    else:
        with open(args.outfile, "wb") as f:
            f.write(buffer.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
