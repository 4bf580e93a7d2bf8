"""Signal-level scores shared by enhancement, TTS and codec metrics (numpy, no extra packages)."""

from __future__ import annotations

import numpy as np
import soundfile

EPS = 1e-8


def read_audio(path: str) -> tuple[np.ndarray, int]:
    """Mono float64 samples and the rate of an audio file (multi-channel: the first channel)."""
    audio, rate = soundfile.read(path, dtype="float64", always_2d=True)
    return audio[:, 0], rate


def si_snr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Scale-invariant SNR in dB (zero-mean signals; the shorter length is used)."""
    n = min(len(estimate), len(reference))
    estimate, reference = estimate[:n] - estimate[:n].mean(), reference[:n] - reference[:n].mean()
    target = np.dot(estimate, reference) / (np.dot(reference, reference) + EPS) * reference
    noise = estimate - target
    return float(10 * np.log10((np.sum(target**2) + EPS) / (np.sum(noise**2) + EPS)))


def mel_cepstra(audio: np.ndarray, rate: int, n_cepstra: int = 13) -> np.ndarray:
    """``(frames, n_cepstra - 1)`` mel cepstra without c0: the real cepstrum (DCT-II / 2N) of the
    natural-log mel amplitude spectrum (40 bands, 25 ms windows, 10 ms hop)."""
    import librosa
    from scipy.fft import dct

    mel = librosa.feature.melspectrogram(
        y=audio.astype(np.float32), sr=rate, n_fft=int(0.025 * rate), hop_length=int(0.01 * rate), n_mels=40,
        power=1.0,
    )
    log_mel = np.log(np.maximum(mel, 1e-5))
    cepstra = dct(log_mel, type=2, axis=0) / (2 * log_mel.shape[0])
    cepstra = cepstra[:n_cepstra]
    return cepstra[1:].T


def mcd_dtw(estimate: np.ndarray, reference: np.ndarray, rate: int) -> float:
    """Mel-cepstral distortion (dB) after DTW alignment, the usual TTS spectral distance.

    ``10 / ln 10 * sqrt(2 * sum_d (c_d - c'_d)^2)`` averaged over aligned frames, on the mel cepstra
    above (not SPTK's mel-generalized cepstrum that egs2's evaluate_mcd.py uses): values compare
    between espnet3 runs, not with papers.
    """
    import librosa

    est, ref = mel_cepstra(estimate, rate), mel_cepstra(reference, rate)
    _, path = librosa.sequence.dtw(X=ref.T, Y=est.T, metric="euclidean")
    diff = ref[path[:, 0]] - est[path[:, 1]]
    return float(10 / np.log(10) * np.sqrt(2) * np.mean(np.sqrt(np.sum(diff**2, axis=1))))
