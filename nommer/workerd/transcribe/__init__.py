"""Offline transcription for the captions output: engines, VAD, cues, and the runner.

* ``engines``: which engines are installed and their languages (``available``),
  which one an output gets (``pick``); pure, safe to import from feederd.
* ``vad``: Silero voice activity detection, speech spans and the
  enough-speech gate.
* ``pocketsphinx_engine``, ``whisper_engine``: a ``Transcriber`` each.
* ``cues``: words to cues (``build_cues``), ``to_vtt``, ``to_srt``,
  ``low_confidence``.
* ``__main__``: ``python -m nommer.workerd.transcribe``, the child process
  the worker runs in its sandbox (see its docstring for the JSON it writes).
"""
