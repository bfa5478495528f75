"""Read the segments of a DASH MPD and rewrite its declared bandwidths.

ffmpeg's dash muxer writes an ``isoff-live`` MPD with one ``SegmentTemplate``
(``$RepresentationID$``, ``$Number%05d$``) and a ``SegmentTimeline`` per
representation, and declares ``bandwidth`` as the ``-b`` it was given, not
what it produced. ``read_timeline`` expands the template into file names and
times; ``rewrite_bandwidth`` writes the measured peaks back; ``add_text_tracks``
adds the job's captions as WebVTT text AdaptationSets. Parsing uses
``xml.etree`` (the MPD is the one our own ffmpeg run wrote: no DTD, no
entities). Pure functions of files; no reactor.

Supported: one ``Period``; ``SegmentTemplate`` with a ``SegmentTimeline``
(``S@t``, ``S@d``, ``S@r`` including ``r=-1``) or with ``@duration``;
attributes inherited from ``Period``/``AdaptationSet`` as the DASH spec
says. ``BaseURL`` is not followed (segment names are relative to the MPD's
directory, as ffmpeg writes them).
"""

import math
import os
import re
import xml.etree.ElementTree as ET
from xml.parsers import expat
from xml.sax.saxutils import escape

import attr

from nommer.core.errors import PermanentJobError
from nommer.workerd.outputs.boxes import sample_entry_codecs
from nommer.workerd.outputs.common import positive_fraction, to_int

#: The namespace of MPD elements (ISO/IEC 23009-1).
DASH_NS = "urn:mpeg:dash:schema:mpd:2011"
#: AudioChannelConfiguration schemes whose value is the channel count.
_CHANNEL_COUNT_SCHEME = "urn:mpeg:dash:23003:3:audio_channel_configuration:2011"
#: MPEG-B CICP ChannelConfiguration code -> channel count.
_CICP_SCHEMES = {"urn:mpeg:mpegB:cicp:ChannelConfiguration",
                 "urn:mpeg:mpegb:cicp:channelconfiguration"}
_CICP_CHANNELS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 8, 9: 3, 10: 4, 11: 7, 12: 8,
                  13: 24, 14: 8, 15: 12, 16: 10, 17: 12, 18: 14, 19: 12, 20: 14}
#: Video codecs strings without the profile/level part, completed from the init segment.
_BARE_VIDEO_CODECS = {"avc1", "avc3", "hvc1", "hev1", ""}
_TEMPLATE_VAR = re.compile(r"\$(RepresentationID|Number|Time|Bandwidth|)(%0(\d+)d)?\$")
_DURATION = re.compile(r"^P(?:(?P<d>\d+(?:\.\d*)?)D)?"
                       r"(?:T(?:(?P<h>\d+(?:\.\d*)?)H)?(?:(?P<m>\d+(?:\.\d*)?)M)?"
                       r"(?:(?P<s>\d+(?:\.\d*)?)S)?)?$")


@attr.s(frozen=True, auto_attribs=True)
class Segment:
    """One media segment.

    :ivar name: file name relative to the MPD's directory.
    :ivar number: its ``$Number$``.
    :ivar start_s: presentation start in seconds (``(S@t - presentationTimeOffset) / timescale``).
    :ivar duration_s: seconds (``S@d / timescale``).
    """

    name: str
    number: int
    start_s: float
    duration_s: float


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class Representation:
    """One DASH representation (one rung or audio rendition).

    :ivar rep_id: ``Representation@id`` (str).
    :ivar content_type: ``"video"`` or ``"audio"``.
    :ivar codecs: RFC 6381 codecs string (``"avc1.64001e"``, ``"mp4a.40.2"``).
    :ivar width, height: pixels (int), None for audio.
    :ivar frame_rate: ``"num/den"`` (``"30/1"``), None for audio or unknown.
    :ivar lang: language code of the adaptation set, None when absent or ``"und"``.
    :ivar channels: audio channel count, None for video or unknown.
    :ivar sample_rate: audio sampling rate in Hz, None for video or unknown.
    :ivar timescale: ticks per second of the segment timeline.
    :ivar init: init segment file name, relative to the MPD's directory.
    :ivar segments: tuple of ``Segment`` in order.
    """

    rep_id: str
    content_type: str
    codecs: str
    width: int = None
    height: int = None
    frame_rate: str = None
    lang: str = None
    channels: int = None
    sample_rate: int = None
    timescale: int = 1
    init: str = None
    segments: tuple = ()

    @property
    def duration_s(self):
        """Seconds from the first segment's start to the last one's end."""
        if not self.segments:
            return 0.0
        return self.segments[-1].start_s + self.segments[-1].duration_s - self.segments[0].start_s

    @property
    def fps(self):
        """``frame_rate`` as a float, or None."""
        if not self.frame_rate:
            return None
        num, _, den = self.frame_rate.partition("/")
        return float(num) / float(den or 1)


def parse_duration(text):
    """An ISO 8601 duration as MPDs write it (``"PT5.0S"``, ``"PT1H2M3.5S"``,
    ``"P1DT2S"``) -> seconds (float). Raises ``ValueError`` on anything else."""
    m = _DURATION.match((text or "").strip())
    if not m or not any(m.groupdict().values()):
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    parts = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
    return parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]


def expand_template(template, *, rep_id, number=None, time=None, bandwidth=None):
    """``template`` with ``$RepresentationID$``, ``$Number$``, ``$Time$``,
    ``$Bandwidth$`` (each optionally with a ``%0Nd`` width) and ``$$``
    replaced. Raises ``ValueError`` for an identifier with no value."""
    values = {"RepresentationID": rep_id, "Number": number, "Time": time,
              "Bandwidth": bandwidth}

    def sub(m):
        name, width = m.group(1), m.group(3)
        if not name:
            return "$"
        value = values[name]
        if value is None:
            raise ValueError(f"template {template!r} uses ${name}$ which has no value here")
        if width and name != "RepresentationID":
            return f"{int(value):0{int(width)}d}"
        return str(value)

    return _TEMPLATE_VAR.sub(sub, template)


def _ns(root):
    return root.tag[1:].partition("}")[0] if root.tag.startswith("{") else ""


def _q(ns, tag):
    return f"{{{ns}}}{tag}" if ns else tag


def _merged_template(ns, *levels):
    """Attributes and SegmentTimeline of the SegmentTemplate of the deepest
    level, inheriting attributes from the upper ones."""
    attrs, timeline = {}, None
    for element in levels:
        template = element.find(_q(ns, "SegmentTemplate"))
        if template is None:
            continue
        attrs.update(template.attrib)
        tl = template.find(_q(ns, "SegmentTimeline"))
        if tl is not None:
            timeline = tl
    return attrs, timeline


def _attr(name, *levels):
    """The attribute ``name`` of the deepest of ``levels`` that has it."""
    for element in reversed(levels):
        if name in element.attrib:
            return element.attrib[name]
    return None


def _frame_rate(text):
    """``frameRate`` (``"30"``, ``"30000/1001"``) as ``"num/den"``, or None."""
    rate = positive_fraction(text)
    return f"{rate.numerator}/{rate.denominator}" if rate is not None else None


def _channels(ns, *levels):
    for element in reversed(levels):
        for acc in element.findall(_q(ns, "AudioChannelConfiguration")):
            scheme, value = acc.get("schemeIdUri", ""), acc.get("value")
            if scheme == _CHANNEL_COUNT_SCHEME:
                return to_int(value)
            if scheme in _CICP_SCHEMES:
                return _CICP_CHANNELS.get(to_int(value))
    return None


def _segments(rep_id, template, timeline, period_s, bandwidth):
    timescale = int(template.get("timescale", "1"))
    start_number = int(template.get("startNumber", "1"))
    pto = int(template.get("presentationTimeOffset", "0"))
    media = template.get("media")
    if not media:
        raise ValueError(f"representation {rep_id} has no SegmentTemplate@media")
    spans = []  # (t, d) in ticks
    if timeline is not None:
        entries = list(timeline)
        t = 0
        for i, s in enumerate(entries):
            t = int(s.get("t", t))
            d = int(s.get("d"))
            r = int(s.get("r", "0"))
            if r < 0:
                if i + 1 < len(entries) and entries[i + 1].get("t") is not None:
                    end = int(entries[i + 1].get("t"))
                elif period_s is not None:
                    end = pto + int(round(period_s * timescale))
                else:
                    raise ValueError(f"representation {rep_id}: S@r=-1 with no end")
                r = max(0, math.ceil((end - t) / d) - 1)
            for _ in range(r + 1):
                spans.append((t, d))
                t += d
    elif template.get("duration"):
        if period_s is None:
            raise ValueError(f"representation {rep_id}: SegmentTemplate@duration "
                             "without mediaPresentationDuration")
        d = int(template.get("duration"))
        total = int(round(period_s * timescale))
        t = 0
        while t < total:
            spans.append((pto + t, min(d, total - t)))
            t += d
    else:
        raise ValueError(f"representation {rep_id} has neither a SegmentTimeline "
                         "nor SegmentTemplate@duration")
    segments = []
    for i, (t, d) in enumerate(spans):
        number = start_number + i
        name = expand_template(media, rep_id=rep_id, number=number, time=t, bandwidth=bandwidth)
        segments.append(Segment(name, number, (t - pto) / timescale, d / timescale))
    init = template.get("initialization")
    init = expand_template(init, rep_id=rep_id, bandwidth=bandwidth) if init else None
    return timescale, init, tuple(segments)


def read_timeline(mpd_path):
    """The representations of the MPD at ``mpd_path``, in document order.

    :returns: list of ``Representation`` (video and audio; other content
        types such as text are left out), segment names expanded from the
        ``SegmentTemplate`` and its ``SegmentTimeline``. A video ``codecs``
        that is a bare sample-entry code (ffmpeg 5.1 writes ``"hvc1"`` for
        HEVC) is completed from the init segment's decoder configuration
        (``"hvc1.1.6.L93.B0"``); write it back with ``rewrite_bandwidth``'s
        ``codecs``.
    :raises PermanentJobError: the file is not a readable MPD of the shape
        above (not XML, several periods, no template...).
    """
    try:
        root = ET.parse(mpd_path).getroot()
    except (OSError, ET.ParseError) as e:
        raise _unreadable(mpd_path, e) from None
    ns = _ns(root)
    try:
        reps = _read(root, ns)
    except (ValueError, TypeError) as e:
        raise PermanentJobError(f"the DASH manifest {os.path.basename(mpd_path)} "
                                f"is not one we can read: {e}") from None
    base_dir = os.path.dirname(os.path.abspath(mpd_path))
    for i, rep in enumerate(reps):
        if rep.content_type == "video" and rep.init and rep.codecs in _BARE_VIDEO_CODECS:
            full = sample_entry_codecs(os.path.join(base_dir, rep.init))
            if full:
                reps[i] = attr.evolve(rep, codecs=full)
    return reps


def _read(root, ns):
    if root.tag != _q(ns, "MPD"):
        raise ValueError(f"the root element is {root.tag}, not MPD")
    periods = root.findall(_q(ns, "Period"))
    if len(periods) != 1:
        raise ValueError(f"{len(periods)} periods; one is supported")
    period = periods[0]
    period_s = None
    if period.get("duration"):
        period_s = parse_duration(period.get("duration"))
    elif root.get("mediaPresentationDuration"):
        period_s = parse_duration(root.get("mediaPresentationDuration"))
        if period.get("start"):
            period_s -= parse_duration(period.get("start"))
    reps = []
    for aset in period.findall(_q(ns, "AdaptationSet")):
        for rep in aset.findall(_q(ns, "Representation")):
            levels = (period, aset, rep)
            rep_id = rep.get("id")
            if rep_id is None:
                raise ValueError("a Representation has no id")
            content_type = _attr("contentType", aset, rep)
            mime = _attr("mimeType", aset, rep) or ""
            if not content_type:
                content_type = mime.partition("/")[0]
            if content_type not in ("video", "audio"):
                continue
            template, timeline = _merged_template(ns, *levels)
            timescale, init, segments = _segments(rep_id, template, timeline, period_s,
                                                  rep.get("bandwidth"))
            lang = _attr("lang", aset, rep)
            video = content_type == "video"
            reps.append(Representation(
                rep_id=rep_id, content_type=content_type,
                codecs=_attr("codecs", aset, rep) or "",
                width=to_int(_attr("width", aset, rep)) if video else None,
                height=to_int(_attr("height", aset, rep)) if video else None,
                frame_rate=_frame_rate(_attr("frameRate", aset, rep)) if video else None,
                lang=None if not lang or lang.lower() == "und" else lang,
                channels=None if video else _channels(ns, aset, rep),
                sample_rate=None if video else to_int(_attr("audioSamplingRate", aset, rep)),
                timescale=timescale, init=init, segments=segments))
    return reps


def _unreadable(mpd_path, error):
    """The PermanentJobError of an MPD that cannot be read or parsed."""
    return PermanentJobError(f"the DASH manifest {os.path.basename(mpd_path)} cannot be read: {error}")


def _scan(mpd_path, start, end):
    """Run expat over the MPD at ``mpd_path``: ``start(local_name,
    attributes, byte_index)`` at each start tag and ``end(local_name,
    byte_index)`` at each end tag, the names without their namespace and
    the index that of the tag's ``<`` in the file.

    :returns: the file's bytes.
    :raises PermanentJobError: the file cannot be read or is not XML.
    """
    try:
        with open(mpd_path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise _unreadable(mpd_path, e) from None
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.StartElementHandler = lambda name, attributes: start(
        name.rpartition(" ")[2], attributes, parser.CurrentByteIndex)
    parser.EndElementHandler = lambda name: end(name.rpartition(" ")[2], parser.CurrentByteIndex)
    try:
        parser.Parse(data, True)
    except expat.ExpatError as e:
        raise _unreadable(mpd_path, e) from None
    return data


def _replace(mpd_path, data):
    """Replace the file at ``mpd_path`` with ``data`` (bytes) atomically."""
    tmp = mpd_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, mpd_path)


def _start_tag_end(data, start):
    """Index just past the ``>`` of the start tag beginning at ``data[start]`` (bytes)."""
    quote = None
    for i in range(start, len(data)):
        c = data[i:i + 1]
        if quote:
            if c == quote:
                quote = None
        elif c in (b'"', b"'"):
            quote = c
        elif c == b">":
            return i + 1
    raise ValueError(f"unterminated start tag at byte {start}")


def _set_attr(tag, name, value):
    """``tag`` (the bytes of one start tag) with attribute ``name`` set to ``value``."""
    pattern = re.compile(rb"(\s" + re.escape(name.encode()) + rb"""\s*=\s*)("[^"]*"|'[^']*')""")
    replacement = escape(str(value), {'"': "&quot;", "'": "&apos;"}).encode()
    new, count = pattern.subn(lambda m: m.group(1) + m.group(2)[:1] + replacement + m.group(2)[:1],
                              tag, count=1)
    if count:
        return new
    end = len(tag) - (2 if tag.endswith(b"/>") else 1)
    return tag[:end].rstrip() + b" " + name.encode() + b'="' + replacement + b'"' + tag[end:]


def rewrite_bandwidth(mpd_path, bandwidths, *, codecs=None):
    """Set ``Representation@bandwidth`` of the MPD at ``mpd_path`` in place.

    :param bandwidths: ``{rep_id: bits per second}`` (int); representations
        not named keep theirs. An ``AdaptationSet``'s ``minBandwidth`` /
        ``maxBandwidth``, when present, follow its representations.
    :param codecs: optional ``{rep_id: codecs string}`` to set
        ``Representation@codecs`` as well (e.g. ``{r.rep_id: r.codecs for r
        in read_timeline(mpd_path)}`` writes back completed HEVC strings;
        a Representation's attribute overrides its AdaptationSet's).
    :raises ValueError: a rep_id of ``bandwidths`` or ``codecs`` is not in the MPD.
    :raises PermanentJobError: the MPD cannot be read.

    Only those attribute values change: the file is otherwise kept byte
    for byte (namespaces, prefixes, order, whitespace). The XML parser
    (expat) finds each element's start tag; the value is replaced inside
    that tag. (ElementTree cannot write back a default namespace with
    unprefixed attributes without changing a process-wide prefix registry,
    and would reformat the document.) The file is replaced atomically.
    """
    found = []  # (kind, byte index of "<", attributes, index of the enclosing AdaptationSet)
    stack = []

    def start(local, attributes, index):
        if local == "AdaptationSet":
            stack.append(len(found))
            found.append(("set", index, attributes, None))
        elif local == "Representation":
            found.append(("rep", index, attributes, stack[-1] if stack else None))

    def end(local, index):
        if local == "AdaptationSet" and stack:
            stack.pop()

    data = _scan(mpd_path, start, end)
    edits = {}  # byte index of "<" -> {attribute: value}
    per_set = {}
    codecs = codecs or {}
    missing = set(bandwidths) | set(codecs)
    for kind, index, attributes, set_index in found:
        if kind != "rep":
            continue
        rep_id = attributes.get("id")
        if rep_id in codecs:
            edits.setdefault(index, {})["codecs"] = codecs[rep_id]
            missing.discard(rep_id)
        value = to_int(attributes.get("bandwidth"))
        if rep_id in bandwidths:
            value = int(bandwidths[rep_id])
            edits.setdefault(index, {})["bandwidth"] = value
            missing.discard(rep_id)
        if set_index is not None and value is not None:
            per_set.setdefault(set_index, []).append(value)
    if missing:
        raise ValueError(f"no Representation with id {sorted(missing)} in {mpd_path}")
    for set_index, values in per_set.items():
        _, index, attributes, _ = found[set_index]
        for name, value in (("minBandwidth", min(values)), ("maxBandwidth", max(values))):
            if name in attributes:
                edits.setdefault(index, {})[name] = value
    out, pos = [], 0
    for index in sorted(edits):
        end_index = _start_tag_end(data, index)
        tag = data[index:end_index]
        for name, value in edits[index].items():
            tag = _set_attr(tag, name, value)
        out += [data[pos:index], tag]
        pos = end_index
    out.append(data[pos:])
    _replace(mpd_path, b"".join(out))


#: DASH Role scheme; captions made from speech are "subtitle" (a "caption" role also
#: describes sounds, which a transcript does not).
ROLE_SCHEME = "urn:mpeg:dash:role:2011"


def add_text_tracks(mpd_path, tracks):
    """Add a WebVTT text track per entry of ``tracks`` to the MPD at
    ``mpd_path``, in place, before the end of its (one) ``Period``.

    :param tracks: list of ``(rep_id, language, url, bytes_per_second)``:
        the Representation's id (unique in the MPD), the ISO 639 / BCP 47
        language tag, the VTT's URL relative to the MPD, and its size over
        the presentation's duration (for ``bandwidth``, bits = 8 x that).

    Each becomes ``<AdaptationSet id=N contentType="text"
    mimeType="text/vtt" lang=...>`` with a ``Role`` (``subtitle``) and one
    ``Representation`` whose ``BaseURL`` is the whole file: the sidecar
    form dash.js (and Shaka) read. ``N`` follows the highest numeric
    AdaptationSet id. The rest of the file is kept byte for byte (see
    ``rewrite_bandwidth``); it is replaced atomically.
    :raises ValueError: a rep_id is already in the MPD, or the MPD has not
        exactly one Period.
    :raises PermanentJobError: the MPD cannot be read.
    """
    period_ends, set_ids, rep_ids = [], [], set()

    def start(local, attributes, index):
        if local == "AdaptationSet":
            set_ids.append(to_int(attributes.get("id")))
        elif local == "Representation":
            rep_ids.add(attributes.get("id"))

    def end(local, index):
        if local == "Period":
            period_ends.append(index)

    data = _scan(mpd_path, start, end)
    if len(period_ends) != 1:
        raise ValueError(f"{len(period_ends)} periods in {mpd_path}; one is supported")
    taken = [t[0] for t in tracks if t[0] in rep_ids]
    if taken:
        raise ValueError(f"Representation ids {taken} are already in {mpd_path}")
    at = period_ends[0]
    closing = data[at:_start_tag_end(data, at)]  # b"</Period>" or b"</prefix:Period>"
    name = closing[2:-1].strip().decode()
    prefix = name.rpartition(":")[0]
    tag = (lambda local: f"{prefix}:{local}") if prefix else (lambda local: local)
    next_id = max([i for i in set_ids if i is not None], default=-1) + 1
    line_start = data.rfind(b"\n", 0, at) + 1
    before = data[line_start:at]
    own_line = not before.strip()  # "</Period>" alone on its line: insert whole lines above it
    indent = before.decode() if own_line else ""
    unit = "  " if indent and "\t" not in indent else "\t"
    inner = indent + unit

    def q(value):
        return escape(str(value), {'"': "&quot;"})

    text = []
    for k, (rep_id, language, url, bytes_per_second) in enumerate(tracks):
        bandwidth = max(1, int(round(8 * float(bytes_per_second))))
        text += [
            f'{inner}<{tag("AdaptationSet")} id="{next_id + k}" contentType="text" '
            f'mimeType="text/vtt" lang="{q(language)}">',
            f'{inner}{unit}<{tag("Role")} schemeIdUri="{ROLE_SCHEME}" value="subtitle"/>',
            f'{inner}{unit}<{tag("Representation")} id="{q(rep_id)}" bandwidth="{bandwidth}">',
            f'{inner}{unit * 2}<{tag("BaseURL")}>{escape(url)}</{tag("BaseURL")}>',
            f'{inner}{unit}</{tag("Representation")}>',
            f'{inner}</{tag("AdaptationSet")}>',
        ]
    insert = ("\n".join(text) + "\n").encode()
    if own_line:
        out = data[:line_start] + insert + data[line_start:]
    else:
        out = data[:at] + b"\n" + insert + data[at:]
    _replace(mpd_path, out)
