"""Words to caption cues, and cues to WebVTT and SRT.

The rules (BBC and Netflix subtitle guidelines, as media-notes §5 sums them):

* a new cue starts after a pause longer than ``pause_s`` (0.6 s), when the
  cue would last more than ``max_cue_s`` (7 s), or when its text would no
  longer fit ``max_lines`` (2) lines of ``max_line_chars`` (42) characters;
* lines are filled greedily, a word never split (a single word longer than
  a line gets a line of its own);
* a cue is shown at least ``min_cue_s`` (1 s), but never past the next cue's
  start: cues never overlap; the last cue never passes ``end_s`` when given;
* times are written ``HH:MM:SS.mmm`` (SRT: ``HH:MM:SS,mmm``).

Words are the transcriber's JSON words: dicts ``{"word", "start", "end",
"confidence"}``, times in seconds. Words are joined with spaces, which suits
languages written with spaces between words (not Chinese, Japanese or Thai).
"""

import attr


@attr.s(frozen=True, auto_attribs=True)
class Cue:
    """One caption: shown from ``start`` to ``end`` (seconds), ``lines`` of
    text (1 to max_lines ``str``), made of ``words`` (the word dicts)."""

    start: float
    end: float
    lines: list
    words: list


def wrap(texts, max_line_chars):
    """Words (``str``) filled greedily into lines of at most
    ``max_line_chars`` characters: a list of ``str``."""
    lines = []
    for text in texts:
        if lines and len(lines[-1]) + 1 + len(text) <= max_line_chars:
            lines[-1] += " " + text
        else:
            lines.append(text)
    return lines


def build_cues(words, *, max_cue_s=7.0, max_line_chars=42, max_lines=2, min_cue_s=1.0, pause_s=0.6,
               end_s=None):
    """Group ``words`` into cues following the module's rules.

    ``words``: dicts with ``"word"`` (``str``), ``"start"`` and ``"end"``
    (seconds); taken in order of start; empty words are skipped.
    ``end_s``: when given (the audio's duration), no cue ends after it.
    Returns a list of ``Cue``, sorted, not overlapping, each at least
    ``min_cue_s`` long unless the next cue (or ``end_s``) starts sooner.
    """
    ordered = sorted((w for w in words if str(w["word"]).strip()), key=lambda w: (w["start"], w["end"]))
    groups = []
    for w in ordered:
        text = str(w["word"]).strip()
        start, end = float(w["start"]), max(float(w["start"]), float(w["end"]))
        if groups:
            g = groups[-1]
            fits = len(wrap([*g["texts"], text], max_line_chars)) <= max_lines
            if start - g["end"] <= pause_s and end - g["start"] <= max_cue_s and fits:
                g["texts"].append(text)
                g["words"].append(w)
                g["end"] = max(g["end"], end)
                continue
        groups.append({"start": start, "end": end, "texts": [text], "words": [w]})
    cues = []
    for i, g in enumerate(groups):
        start = g["start"]
        end = max(g["end"], start + min_cue_s)
        if i + 1 < len(groups):
            end = min(end, groups[i + 1]["start"])
        if end_s is not None:
            end = min(end, max(start, float(end_s)))
        cues.append(Cue(start=round(start, 3), end=round(max(start, end), 3),
                        lines=wrap(g["texts"], max_line_chars), words=g["words"]))
    return cues


def timestamp(seconds, separator="."):
    """Seconds as ``HH:MM:SS.mmm`` (``separator`` "," for SRT); hours may pass 99."""
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def _vtt_text(line):
    # WebVTT cue text: & and < start markup, and "-->" may not appear.
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(cues):
    """A WebVTT document (``str``): the ``WEBVTT`` header, then each cue as
    ``HH:MM:SS.mmm --> HH:MM:SS.mmm`` and its lines (``&``, ``<``, ``>``
    escaped), separated by blank lines. No cues: the header alone."""
    parts = ["WEBVTT\n"]
    for cue in cues:
        parts.append(f"{timestamp(cue.start)} --> {timestamp(cue.end)}\n"
                     + "".join(_vtt_text(line) + "\n" for line in cue.lines))
    return "\n".join(parts)


def to_srt(cues):
    """A SubRip document (``str``): numbered cues from 1, ``HH:MM:SS,mmm``
    times, blank-line separated. No cues: an empty string."""
    parts = []
    for n, cue in enumerate(cues, 1):
        parts.append(f"{n}\n{timestamp(cue.start, ',')} --> {timestamp(cue.end, ',')}\n"
                     + "".join(line.replace("-->", "->") + "\n" for line in cue.lines))
    return "\n".join(parts)


def low_confidence(words, threshold):
    """The words whose ``"confidence"`` is below ``threshold`` (0..1), as
    the same dicts in the same order; words with no confidence (None) are
    not listed."""
    return [w for w in words if w.get("confidence") is not None and w["confidence"] < threshold]
