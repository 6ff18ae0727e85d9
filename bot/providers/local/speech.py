"""Speech for the local avatar: espeak-ng through ctypes, with phoneme timings for lip-sync.

libespeak-ng keeps global state (one voice, one callback, one synthesis at a time per process),
so every synthesis holds ``_LOCK``. Called from a worker thread, never the event loop: a long
text takes a few milliseconds, and the library blocks while it runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import threading
from dataclasses import dataclass, field

import av
import numpy as np

from bot.core.errors import ConfigError

ESPEAK_RATE = 22050  # what libespeak-ng produces (checked at initialisation)
OUT_RATE = 48000  # what WebRTC Opus runs at

# espeak_AUDIO_OUTPUT / options / flags / parameters from speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_PHONEME_IPA = 0x0002
_INIT_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
_EE_OK = 0


class _EventId(ctypes.Union):
    _fields_ = (
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_char * 8),
    )


class _Event(ctypes.Structure):
    _fields_ = (
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    )


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True)
class Phoneme:
    """One phoneme of an utterance: its IPA text and where it starts in the audio (ms)."""

    ipa: str
    start_ms: int


@dataclass
class Utterance:
    """Synthesised speech: 48 kHz mono int16 samples and the visemes that go with them."""

    text: str
    samples: np.ndarray
    phonemes: list[Phoneme] = field(default_factory=list)
    visemes: list[tuple[int, str]] = field(default_factory=list)
    complete: bool = True  # False: cut at ``max_samples``, the rest of the text is not in it

    @property
    def duration_ms(self) -> int:
        """Length of the audio in milliseconds."""
        return int(len(self.samples) * 1000 / OUT_RATE)


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice (``en-us+f3`` is language en-us with variant f3) and its delivery."""

    name: str = "en-us"
    rate: int = 170  # words per minute
    pitch: int = 50  # 0..100


class _Engine:
    """The process-wide libespeak-ng instance."""

    def __init__(self) -> None:
        self._lib: ctypes.CDLL | None = None
        self._callback = _CALLBACK(self._on_synth)  # kept alive: the library holds a pointer
        self._pcm: list[bytes] = []
        self._samples = 0
        self._limit: int | None = None  # samples after which the synthesis is aborted
        self._phonemes: list[Phoneme] = []
        self._abort = False
        self.sample_rate = ESPEAK_RATE

    def _load(self) -> ctypes.CDLL:
        if self._lib is not None:
            return self._lib
        path = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            raise ConfigError(
                "The local avatar needs espeak-ng: install the Debian packages "
                "espeak-ng and libespeak-ng1."
            ) from exc
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
        lib.espeak_SetSynthCallback.argtypes = (_CALLBACK,)
        lib.espeak_SetVoiceByName.argtypes = (ctypes.c_char_p,)
        lib.espeak_SetParameter.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int)
        lib.espeak_Synth.argtypes = (
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
        )
        options = _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA | _INIT_DONT_EXIT
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, options)
        if rate <= 0:
            raise ConfigError("espeak-ng did not start: is espeak-ng-data installed?")
        self.sample_rate = rate
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib
        return lib

    def _on_synth(self, wav: ctypes.Array, count: int, events: ctypes.Array) -> int:
        if wav and count > 0 and not self._abort:
            self._pcm.append(ctypes.string_at(wav, count * 2))
            self._samples += count
            if self._limit is not None and self._samples > self._limit:
                self._abort = True  # the library stops at this callback's return value
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                ipa = ev.id.string.decode("utf-8", "replace")
                self._phonemes.append(Phoneme(ipa, ev.audio_position))
            i += 1
        return 1 if self._abort else 0

    def set_voice(self, voice: Voice) -> bool:
        """Select ``voice``; ``False`` when espeak-ng does not know it."""
        lib = self._load()
        if lib.espeak_SetVoiceByName(voice.name.encode()) != _EE_OK:
            return False
        lib.espeak_SetParameter(_PARAM_RATE, voice.rate, 0)
        lib.espeak_SetParameter(_PARAM_PITCH, voice.pitch, 0)
        lib.espeak_SetParameter(_PARAM_VOLUME, 100, 0)
        return True

    def synth(
        self, text: str, voice: Voice, *, limit: int | None = None, end_pause: bool = True
    ) -> tuple[np.ndarray, list[Phoneme], bool]:
        """Synthesise ``text``: raw samples at ``sample_rate``, phoneme timings, completeness.

        With ``limit`` the synthesis stops after that many samples and reports incomplete.
        """
        lib = self._load()
        if not self.set_voice(voice):
            raise ValueError(f"espeak-ng has no voice {voice.name!r}")
        self._pcm, self._phonemes, self._samples = [], [], 0
        self._limit, self._abort = limit, False
        data = text.encode("utf-8") + b"\0"
        buf = ctypes.create_string_buffer(data)
        flags = _CHARS_UTF8 | (_ENDPAUSE if end_pause else 0)
        try:
            lib.espeak_Synth(buf, len(data), 0, 0, 0, flags, None, None)
            pcm = np.frombuffer(b"".join(self._pcm), dtype=np.int16)
            complete = not self._abort
        finally:
            self._pcm, self._limit, self._abort = [], None, False
        phonemes, self._phonemes = self._phonemes, []
        if limit is not None:
            pcm = pcm[:limit]
        return pcm, phonemes, complete


_ENGINE = _Engine()
_LOCK = threading.Lock()


def voice_exists(voice: Voice) -> bool:
    """Whether espeak-ng can speak with ``voice`` (blocking; run off the event loop)."""
    with _LOCK:
        return _ENGINE.set_voice(voice)


def synthesize(
    text: str, voice: Voice, *, max_samples: int | None = None, end_pause: bool = True
) -> Utterance:
    """Speak ``text`` into 48 kHz samples with visemes (blocking; run off the event loop).

    With ``max_samples`` the audio is at most that long: a text that would be longer is cut
    there and the utterance says ``complete=False`` (the caller splits the text and retries).
    ``end_pause`` adds espeak-ng's pause at the end (a sentence end; not inside a sentence).
    """
    with _LOCK:
        rate = _ENGINE.sample_rate
        limit = None
        if max_samples is not None:
            # leave room for the resampler's rounding; the result is cut to max_samples anyway
            limit = max(1, max_samples * rate // OUT_RATE - 32)
        pcm, phonemes, complete = _ENGINE.synth(text, voice, limit=limit, end_pause=end_pause)
        rate = _ENGINE.sample_rate
    samples = resample(pcm, rate, OUT_RATE)
    if max_samples is not None:
        samples = samples[:max_samples]
    visemes = visemes_for(phonemes)
    # espeak-ng sends no event for the pause it adds at the end: close the mouth when sound stops
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 300)
    end_ms = int((loud[-1] + 1) * 1000 / rate) if len(loud) else 0
    if visemes and end_ms > visemes[-1][0] and visemes[-1][1] != "rest":
        visemes.append((end_ms, "rest"))
    return Utterance(text, samples, phonemes, visemes, complete)


# ---------------------------------------------------------------- pieces to synthesise
MAX_PIECE_CHARS = 64  # about 4 s of speech at 170 words a minute
_MAX_WORD = 16  # longer "words" (URLs, digit strings) are cut, so none outgrows a piece
_SENTENCE_END = re.compile(r"(?<=[.!?\u2026])\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:\u2014])\s+")


def split_for_speech(text: str, max_chars: int = MAX_PIECE_CHARS) -> list[tuple[str, bool]]:
    """Cut ``text`` into pieces of at most ``max_chars`` to synthesise one at a time.

    Each piece comes with whether it ends a sentence (it then gets espeak-ng's end pause).
    Sentences are kept whole when they fit; longer ones are cut after commas, semicolons and
    colons, then between words; a word longer than ``_MAX_WORD`` is cut too.
    """
    out: list[tuple[str, bool]] = []
    for sentence in _SENTENCE_END.split(" ".join(text.split())):
        if not sentence:
            continue
        parts: list[str] = []
        for clause in _CLAUSE_END.split(sentence):
            words: list[str] = []
            for word in clause.split(" "):
                words += [word[i:i + _MAX_WORD] for i in range(0, len(word), _MAX_WORD)]
            parts += _pack(words, max_chars)
        pieces = _pack(parts, max_chars)
        out += [(piece, i == len(pieces) - 1) for i, piece in enumerate(pieces)]
    return out


def halve(piece: str) -> tuple[str, str] | None:
    """``piece`` cut in two at the word nearest its middle; ``None`` for a single word."""
    words = piece.split(" ")
    if len(words) < 2:
        return None
    mid = len(words) // 2
    return " ".join(words[:mid]), " ".join(words[mid:])


def _pack(items: list[str], max_chars: int) -> list[str]:
    """Join consecutive ``items`` with spaces into strings of at most ``max_chars``."""
    out: list[str] = []
    for item in items:
        if out and len(out[-1]) + 1 + len(item) <= max_chars:
            out[-1] += " " + item
        elif item:
            out.append(item)
    return out


def resample(pcm: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample mono int16 ``pcm`` with libswresample."""
    if len(pcm) == 0:
        return np.zeros(0, dtype=np.int16)
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate_in
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate_out)
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out).astype(np.int16) if out else np.zeros(0, dtype=np.int16)


# Viseme classes: each IPA phoneme maps to one mouth shape the face knows how to draw.
_VISEME_CHARS: list[tuple[str, str]] = [
    ("pbm", "closed"),
    ("fv", "teeth"),
    ("θð", "tongue"),
    ("ʃʒ", "round"),
    ("uʊwɔoɒ", "round"),
    ("aɑæʌɐ", "open"),
    ("eɛəɜɚ", "mid"),
    ("iɪjy", "wide"),
    ("tdnszlrɹkgŋhʔxɾ", "small"),
]


def viseme_of(ipa: str) -> str:
    """The mouth shape for one IPA phoneme (``rest`` for pauses and unknown symbols)."""
    for ch in ipa:
        for chars, viseme in _VISEME_CHARS:
            if ch in chars:
                return viseme
    return "rest"


def visemes_for(phonemes: list[Phoneme]) -> list[tuple[int, str]]:
    """Turn phoneme timings into ``(start_ms, viseme)`` steps, merging repeats."""
    out: list[tuple[int, str]] = []
    for ph in phonemes:
        v = viseme_of(ph.ipa)
        if not out or out[-1][1] != v:
            out.append((ph.start_ms, v))
    return out
