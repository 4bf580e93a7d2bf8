"""Pre-flight checks of the files a split reads, with ``<file>:<line>`` in every message.

Run on the launching machine before any Ray worker starts. What can be checked from the files
alone is checked here: line format, duplicate and mismatched utterance ids across a split's
files, audio files that are missing, unreadable, empty or of mixed sample rate or channel
count, numbers that do not parse. What only loading can reveal (pipes, ark offsets, a
preprocessor failing on one utterance) surfaces in the shape pass (:mod:`espnet3.data.shapes`),
which loads every item once, also before training starts.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import soundfile

from espnet3 import storage
from espnet3.data import remote
from espnet3.errors import DataError
from espnet3.data.sources import DataTriple, SplitSource

# Loader types whose file is a `<utt_id> <value>` table.
TABLE_TYPES = ("sound", "multi_columns_sound", "variable_columns_sound", "kaldi_ark", "npy", "text",
               "text_int", "csv_int", "text_float", "csv_float", "score", "duration", "random_text")
NUMBER_TYPES = {"text_int": (" ", int), "csv_int": (",", int), "text_float": (" ", float), "csv_float": (",", float)}
EXPECTED = {
    "sound": "'<utt_id> <path to an audio file>'",
    "text": "'<utt_id> <text>'",
    "npy": "'<utt_id> <path to a .npy file>'",
}


def read_table(path: Path, expected: str, allow_empty_value: bool) -> tuple[dict[str, str], dict[str, int]]:
    """``<key> <value>`` lines -> (key -> value, key -> 1-based line number); bad lines raise ``DataError``."""
    try:
        return _read_table(path, expected, allow_empty_value)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}:{_undecodable_line(path)}: not UTF-8 ({err.reason} at byte {err.object[err.start]:#04x}); "
                        "ESPnet2 reads data files as UTF-8: convert it, e.g. iconv -f latin1 -t utf-8") from None


def _undecodable_line(path: Path) -> int:
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return lineno
    return 1


def _read_table(path: Path, expected: str, allow_empty_value: bool) -> tuple[dict[str, str], dict[str, int]]:
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    try:
        f = path.open(encoding="utf-8")
    except OSError as err:
        raise DataError(f"cannot read {path} ({err.strerror or err}); expected a file of {expected} lines") from None
    with f:
        for lineno, line in enumerate(f, 1):
            parts = line.strip().split(maxsplit=1)
            if not parts:
                raise DataError(f"{path}:{lineno}: empty line; expected {expected}")
            key = parts[0]
            value = parts[1].strip() if len(parts) == 2 else ""
            if not value and not allow_empty_value:
                raise DataError(f"{path}:{lineno}: {key!r} has no value; expected {expected}")
            if key in lines:
                raise DataError(f"{path}:{lineno}: utterance {key!r} repeats line {lines[key]}; expected each utterance once")
            values[key] = value
            lines[key] = lineno
    if not values:
        raise DataError(f"{path}: no utterances; expected at least one line {expected}")
    return values, lines


def _check_same_keys(a_path: Path, a_lines: dict[str, int], b_path: Path, b_lines: dict[str, int], what: str) -> None:
    for key, lineno in a_lines.items():
        if key not in b_lines:
            raise DataError(
                f"{a_path}:{lineno}: utterance {key!r} has no line in {b_path}; "
                f"expected every utterance in {a_path.name} to have {what} in {b_path.name}"
            )


def _check_sound(triple: DataTriple, table: dict[str, str], lines: dict[str, int]) -> None:
    """Every line one readable, non-empty audio file; one sample rate and channel count per file."""
    first: tuple[int, int, int] | None = None  # (sample rate, channels, line)
    expected = EXPECTED["sound"]
    for utt, value in table.items():
        where = f"{triple.path}:{lines[utt]}"
        paths = value.split() if triple.type != "sound" else [value]
        if triple.type == "sound" and (value.endswith("|") or len(value.split()) != 1):
            raise DataError(
                f"{where}: {value!r} is not a single audio file path; expected {expected}. Pipes and ark "
                f"offsets need ESPnet2's `kaldi_ark` loader type: [{triple.path}, {triple.name}, kaldi_ark]"
            )
        for audio in map(Path, paths):
            if not audio.is_file():
                raise DataError(
                    f"{where}: audio file {audio} does not exist (relative paths are resolved from "
                    f"{Path.cwd()}); expected {expected}"
                )
            try:
                info = soundfile.info(str(audio))
            except RuntimeError as err:  # soundfile.LibsndfileError
                raise DataError(f"{where}: cannot read audio file {audio} ({err}); expected a WAV/FLAC file") from None
            if info.frames == 0:
                raise DataError(f"{where}: {audio} holds no samples; remove utterance {utt!r} from the split's files")
            if first is None:
                first = (info.samplerate, info.channels, lines[utt])
                continue
            if info.samplerate != first[0]:
                raise DataError(
                    f"{where}: {audio} is {info.samplerate} Hz but line {first[2]} is {first[0]} Hz; "
                    "expected one sample rate per file (resample the audio)"
                )
            if info.channels != first[1]:
                raise DataError(
                    f"{where}: {audio} has {info.channels} channel(s) but line {first[2]} has {first[1]}; "
                    "expected one channel count per file (convert the audio, e.g. to mono)"
                )


def _check_numbers(triple: DataTriple, table: dict[str, str], lines: dict[str, int]) -> None:
    delimiter, number = NUMBER_TYPES[triple.type]
    for utt, value in table.items():
        try:
            [number(v) for v in value.split(delimiter)]
        except ValueError:
            kind = "integers" if number is int else "numbers"
            raise DataError(
                f"{triple.path}:{lines[utt]}: {value!r} is not {kind} separated by {delimiter!r}; "
                f"expected the `{triple.type}` format '<utt_id> <{kind}>'"
            ) from None


def _check_npy(triple: DataTriple, table: dict[str, str], lines: dict[str, int]) -> None:
    for utt, value in table.items():
        if not Path(value).is_file():
            raise DataError(f"{triple.path}:{lines[utt]}: {value} does not exist; expected {EXPECTED['npy']}")


# Loader types whose values are files, which may be URIs in a list file that is itself in storage.
FILE_TYPES = ("sound", "multi_columns_sound", "variable_columns_sound", "kaldi_ark", "npy")


def check_triple(triple: DataTriple, key: str) -> dict[str, int] | None:
    """Check one stream's file; returns its utterance -> line map for table types, else ``None``.

    A list file in object storage is named by its URI in every message, and the files its lines
    name are fetched first (:mod:`espnet3.data.remote`), so they are checked like local ones.
    """
    uri = storage.uri_of(triple.path)
    if uri is None:
        return _check_triple(triple, key)
    try:
        return _check_triple(triple, key)
    except DataError as err:
        raise DataError(str(err).replace(str(triple.path), uri)) from None


def _fetch_items(triple: DataTriple, lines: dict[str, int]) -> None:
    files = remote.item_files(triple.path)
    missing = set(remote.fetch_items(p for paths in files.values() for p in paths))
    for utt, paths in files.items():
        gone = [storage.uri_of(p) for p in paths if storage.uri_of(p) in missing]
        if gone:
            raise DataError(f"{triple.path}:{lines[utt]}: {gone[0]} does not exist in object storage; "
                            "upload it, or fix the line")


def _check_no_uris(triple: DataTriple, table: dict[str, str], lines: dict[str, int]) -> None:
    for utt, value in table.items():
        if any(storage.is_uri(t) for t in value.split()):
            raise DataError(
                f"{triple.path}:{lines[utt]}: a local list file names {value.split()[0]}; a list whose lines are "
                "URIs must be in object storage too (upload it beside the audio and give its URI in the config)"
            )


def _check_triple(triple: DataTriple, key: str) -> dict[str, int] | None:
    if not triple.path.exists():
        raise DataError(f"{triple.path} does not exist (`{key}`, data key {triple.name!r}); fix the path")
    if triple.type not in TABLE_TYPES and not triple.type.startswith("rand_"):
        return None
    expected = EXPECTED.get(triple.type, f"'<utt_id> <{triple.type} value>'")
    allow_empty = triple.type in ("text", "random_text")
    table, lines = read_table(triple.path, expected, allow_empty_value=allow_empty)
    if triple.type in FILE_TYPES:
        if storage.uri_of(triple.path) is None:
            _check_no_uris(triple, table, lines)
        else:
            _fetch_items(triple, lines)
    if triple.type in ("sound", "multi_columns_sound", "variable_columns_sound"):
        _check_sound(triple, table, lines)
    elif triple.type in NUMBER_TYPES:
        _check_numbers(triple, table, lines)
    elif triple.type == "npy":
        _check_npy(triple, table, lines)
    return lines


def check_split(source: SplitSource) -> None:
    """Check every file of one split; raise :class:`DataError` at the first problem.

    A ``_target_`` dataset is the user's code: it is checked by loading it (the shape pass).
    """
    source = source.resolved()
    checked: list[tuple[Path, dict[str, int]]] = []
    for triple in source.triples:
        lines = check_triple(triple, source.key)
        if lines is not None:
            checked.append((triple.path, lines))
    if source.shards is not None:
        checked.insert(0, _check_shards(source))
    for (a_path, a_lines), (b_path, b_lines) in _pairs(checked):
        try:
            _check_same_keys(a_path, a_lines, b_path, b_lines, "a line")
            _check_same_keys(b_path, b_lines, a_path, a_lines, "a line")
        except DataError as err:
            uri = storage.uri_of(a_path.parent)  # a directory in object storage: named by its URI
            raise DataError(str(err).replace(str(a_path.parent), uri) if uri else str(err)) from None
    if source.directory is not None and (source.directory / "utt2spk").is_file() and checked:
        # Kaldi's validate_data_dir rule; ESPnet2's spk/lid recipes read utt2spk as labels.
        utt2spk = source.directory / "utt2spk"
        _, spk_lines = read_table(utt2spk, "'<utt_id> <speaker_id>'", allow_empty_value=False)
        first_path, first_lines = checked[0]
        _check_same_keys(first_path, first_lines, utt2spk, spk_lines, "a speaker")
        _check_same_keys(utt2spk, spk_lines, first_path, first_lines, "audio")


def _check_shards(source: SplitSource) -> tuple[Path, dict[str, int]]:
    """Every shard ``shards.json`` names exists; returns the manifest's utterances, in its order
    (matched against the list files like a data file's lines)."""
    from espnet3.data.shard_format import MANIFEST, ShardManifest

    manifest = ShardManifest.load(source.shards, source.key)
    for shard in manifest.shards:
        if not storage.is_file(manifest.location(shard)):
            raise DataError(
                f"`{source.key}`: {manifest.location(shard)}, named by {storage.join(manifest.root, MANIFEST)}, "
                "does not exist; upload the whole shard directory, or convert the data again"
            )
    keys = {key: i for i, key in enumerate(manifest.keys, 1)}
    return source.shards / MANIFEST, keys


def _pairs(checked: list[tuple[Path, dict[str, int]]]) -> Iterable[tuple]:
    """Each file against the first: enough to prove every file has the same utterances."""
    return ((checked[0], other) for other in checked[1:])


def read_texts(path: Path) -> list[str]:
    """The values of a ``text``-type file, in file order (token lists are built from them)."""
    table, _ = read_table(path, EXPECTED["text"], allow_empty_value=True)
    return list(table.values())
