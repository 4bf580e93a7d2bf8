"""ctypes binding to the espeak-ng library shipped by the ``espeakng-loader`` wheel.

The training machines have no internet, so the default corpus is synthesised. The
wheel gives us ``libespeak-ng.so`` and its voice data without a system package, and
a direct ctypes binding avoids a dependency on a second wrapper library.

Reproducibility caveat: espeak-ng keeps synthesis state in C statics that no API
call resets (``Flutter_ix`` in ``wavegen.c``, the pitch-flutter table index, keeps
advancing across utterances). The samples of an utterance therefore depend on what
the process synthesised before it. Output is fully reproducible for the same
*sequence* of calls in a fresh process, which is how :mod:`espnet3.corpora.digits`
uses this module (one fresh worker process per split).
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TARGET_SAMPLE_RATE = 16000
# espeak-ng synthesises at 22,050 Hz; 16000/22050 reduces to 320/441.
_RESAMPLE_UP = 320
_RESAMPLE_DOWN = 441

# Constants from speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_AUTO = 0
_ESPEAK_RATE = 1
_ESPEAK_PITCH = 3
_ESPEAK_RANGE = 4
_EE_OK = 0
_EE_NOT_FOUND = 2

# espeak-ng's own limits (speak_lib.h); rates above ~220 wpm make digit strings too
# short for CTC after 4x subsampling, but that policy belongs to the corpus, not here.
RATE_LIMITS = (80, 450)
PITCH_LIMITS = (0, 99)
RANGE_LIMITS = (0, 99)

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _EspeakVoice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


@dataclass(frozen=True)
class VoiceSpec:
    """One synthetic speaker: espeak voice, variant and prosody settings.

    Kept separate from the synthesiser so a corpus plan can be built, compared and
    written to disk without loading the C library.
    """

    voice: str
    variant: str | None
    pitch: int
    rate: int
    pitch_range: int

    @property
    def espeak_name(self) -> str:
        """The name espeak_SetVoiceByName expects, e.g. ``en-us+m3``."""
        return self.voice if not self.variant else f"{self.voice}+{self.variant}"


class EspeakError(RuntimeError):
    """espeak-ng returned an error code; carries the failing call for debugging."""


class EspeakSynthesizer:
    """Process-wide handle on libespeak-ng.

    espeak-ng is a C library with global state, so there must be exactly one
    initialised instance per process; use :func:`get_synthesizer` rather than
    constructing this directly.
    """

    def __init__(self, library_path: str | None = None, data_path: str | None = None):
        import espeakng_loader

        self._library_path = library_path or espeakng_loader.get_library_path()
        self._data_path = Path(data_path or espeakng_loader.get_data_path())
        self._lib = ctypes.CDLL(self._library_path)
        self._declare_signatures()
        rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self._data_path).encode(), 0
        )
        if rate <= 0:
            raise EspeakError(
                f"espeak_Initialize failed (returned {rate}) with data path "
                f"{self._data_path}; reinstall espeakng-loader"
            )
        self.sample_rate: int = int(rate)
        self._chunks: list[np.ndarray] = []
        self._lock = threading.Lock()
        # The CFUNCTYPE object must outlive every synthesis call: if it were garbage
        # collected, espeak would call into freed memory.
        self._callback = _SynthCallback(self._on_samples)
        self._lib.espeak_SetSynthCallback(self._callback)
        self._valid_bases: dict[str, bool] = {}

    def _declare_signatures(self) -> None:
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_EspeakVoice))
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None

    def _on_samples(self, wav, numsamples: int, events) -> int:
        if numsamples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        return 0  # 0 = keep synthesising

    def _check(self, code: int, call: str) -> None:
        if code != _EE_OK:
            raise EspeakError(f"{call} failed with espeak error code {code}")

    # ----------------------------------------------------------------- voices
    def available_voices(self, language_prefix: str = "en") -> list[str]:
        """Voice names usable with :meth:`synthesize`, for error messages and CLIs."""
        found: set[str] = set()
        voices = self._lib.espeak_ListVoices(None)
        i = 0
        while voices and voices[i]:
            ident = voices[i].contents.identifier
            if ident:
                base = ident.decode("utf-8", "replace").rsplit("/", 1)[-1].lower()
                if base.startswith(language_prefix):
                    found.add(base)
            i += 1
        return sorted(found)

    def available_variants(self) -> list[str]:
        """Variant names (the part after ``+``) shipped in the voice data."""
        variant_dir = self._data_path / "voices" / "!v"
        return sorted(p.name for p in variant_dir.iterdir() if p.is_file())

    def check_voice(self, voice: str, variant: str | None = None) -> None:
        """Reject unknown names up front.

        espeak-ng silently falls back to a default for an unknown variant, and an
        unknown voice only fails at synthesis time, deep inside corpus generation.
        """
        if not isinstance(voice, str) or not voice:
            raise TypeError(f"voice must be a non-empty str, got {voice!r}")
        if "+" in voice:
            if variant is not None:
                raise ValueError(f"voice {voice!r} already names a variant; do not also pass variant={variant!r}")
            voice, variant = voice.split("+", 1)
        with self._lock:
            ok = self._valid_bases.get(voice)
            if ok is None:
                ok = self._lib.espeak_SetVoiceByName(voice.encode()) == _EE_OK
                self._valid_bases[voice] = ok
        if not ok:
            some = ", ".join(self.available_voices()[:12])
            hint = " ('en-gb' does not exist; use 'en-gb-x-rp')" if voice.lower() == "en-gb" else ""
            raise ValueError(f"unknown espeak voice {voice!r}{hint}; valid English voices include: {some}")
        if variant:
            variants = self.available_variants()
            if variant not in variants:
                raise ValueError(
                    f"unknown espeak variant {variant!r}; valid variants include: "
                    + ", ".join(v for v in variants if v[:1] in "mf" and v[1:].isdigit())
                    + ", klatt, ..."
                )

    # -------------------------------------------------------------- synthesis
    def reset_random_state(self, seed: int) -> None:
        """Seed espeak-ng's and libc's generators (klatt noise, etc.).

        Changes libc's process-global ``rand()`` state; only call it in a process
        dedicated to synthesis.
        """
        self._lib.espeak_ng_SetRandSeed(int(seed))
        ctypes.CDLL(None).srand(ctypes.c_uint(int(seed) & 0xFFFFFFFF))

    def synthesize(self, text: str, spec: VoiceSpec) -> np.ndarray:
        """Speak ``text`` with ``spec``; int16 samples at :attr:`sample_rate`."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text must be a non-empty str, got {text!r}")
        for value, (lo, hi), flag in (
            (spec.rate, RATE_LIMITS, "rate"),
            (spec.pitch, PITCH_LIMITS, "pitch"),
            (spec.pitch_range, RANGE_LIMITS, "pitch_range"),
        ):
            if not lo <= int(value) <= hi:
                raise ValueError(f"{flag}={value} is outside espeak's range [{lo}, {hi}]")
        self.check_voice(spec.voice, spec.variant)
        data = text.encode("utf-8")
        buf = ctypes.create_string_buffer(data)
        with self._lock:
            self._chunks = []
            self._check(self._lib.espeak_SetVoiceByName(spec.espeak_name.encode()), f"espeak_SetVoiceByName({spec.espeak_name!r})")
            self._check(self._lib.espeak_SetParameter(_ESPEAK_RATE, int(spec.rate), 0), "espeak_SetParameter(rate)")
            self._check(self._lib.espeak_SetParameter(_ESPEAK_PITCH, int(spec.pitch), 0), "espeak_SetParameter(pitch)")
            self._check(self._lib.espeak_SetParameter(_ESPEAK_RANGE, int(spec.pitch_range), 0), "espeak_SetParameter(range)")
            self._check(
                self._lib.espeak_Synth(buf, len(data) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_AUTO, None, None),
                f"espeak_Synth({text!r})",
            )
            self._check(self._lib.espeak_Synchronize(), "espeak_Synchronize")
            chunks, self._chunks = self._chunks, []
        if not chunks:
            raise EspeakError(f"espeak produced no audio for {text!r} with voice {spec.espeak_name!r}")
        return np.concatenate(chunks).astype(np.int16, copy=False)

    def synthesize_16k(self, text: str, spec: VoiceSpec) -> np.ndarray:
        """Speak ``text`` at 16 kHz, the rate ESPnet's ASR recipes expect."""
        return resample_to_16k(self.synthesize(text, spec), self.sample_rate)


def resample_to_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Polyphase-resample int16 audio to 16 kHz int16 (clipped, rounded)."""
    if sample_rate == TARGET_SAMPLE_RATE:
        return samples.astype(np.int16, copy=True)
    from math import gcd

    from scipy.signal import resample_poly

    if sample_rate == 22050:
        up, down = _RESAMPLE_UP, _RESAMPLE_DOWN
    else:
        g = gcd(TARGET_SAMPLE_RATE, sample_rate)
        up, down = TARGET_SAMPLE_RATE // g, sample_rate // g
    out = resample_poly(samples.astype(np.float64), up, down)
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


_SINGLETON: EspeakSynthesizer | None = None
_SINGLETON_LOCK = threading.Lock()


def get_synthesizer() -> EspeakSynthesizer:
    """The process's espeak-ng instance; espeak_Initialize must run only once."""
    global _SINGLETON
    if _SINGLETON is None:
        with _SINGLETON_LOCK:
            if _SINGLETON is None:
                _SINGLETON = EspeakSynthesizer()
    return _SINGLETON
