"""Filter graphs read exactly as libavfilter 5.1 reads them.

A filter graph (``-vf``, ``-af``, ``-filter``, ``-filter_complex``,
``-lavfi``) is validated by what ffmpeg will *do* with it, so this module
mirrors the C that reads it, function by function (FFmpeg ``n5.1``):

* ``get_token`` is libavutil/avstring.c ``av_get_token``: leading
  whitespace skipped, ``\\x`` gives ``x``, ``'...'`` is taken verbatim (no
  escapes inside; an unterminated quote runs to the end of the text),
  trailing whitespace trimmed unless it was quoted or escaped.
* ``parse`` is libavfilter/graphparser.c ``avfilter_graph_parse2``: a
  leading ``sws_flags=`` segment taken verbatim up to the first ``;``
  anywhere after it (quotes mean nothing there: ``parse_sws_flags``; ffmpeg 5.1 then appends it, as
  ``:flags=<text>``, to the options of every ``scale`` whose options do not
  hold the text ``flags``, so it can set any scale option);
  then chains of ``[in]...name@inst=opts[out]`` separated by ``,`` and
  ``;`` (``parse_inputs`` / ``parse_link_name`` / ``parse_filter`` /
  ``parse_outputs``), the name read with ``av_get_token(buf, "=,;[")``, the
  options with ``av_get_token(buf, "[],;")``, the instance suffix split off
  as ``create_filter`` does (an ``@`` within the first 29 bytes and not
  last).
* ``split_options`` is libavfilter/avfilter.c ``process_options`` with
  libavutil/opt.c ``av_opt_get_key_value`` / ``get_key``: ``:`` between
  items, ``key=value`` when the text before ``=`` is only key characters
  ``[A-Za-z0-9_./-]`` (else the whole item is a positional value), values
  read again with ``av_get_token`` (a second round of quotes and escapes).

``parse`` is the *mirror*: it returns what ffmpeg sees, or raises
FilterGraphError where ffmpeg's parser itself fails. ``parse(strict=True)``
also refuses what reads two ways to a person or another tool (quotes or
escapes in labels and filter names, unterminated quotes, a trailing lone
backslash, a ``sws_flags`` segment holding more than plain flags, a
positional option after a named one, whose target in ffmpeg depends on
option-table offsets). Policy (which filters, which values) is the
caller's: ``ffmpeg_filters.filtergraph``.

tests/workerd/test_filtergraph_differential.py runs libavfilter itself on
generated graphs and checks this reading against it.

Size (issue 10: about 400 lines at most, or a reason): kept whole. It
mirrors one C file of ffmpeg's function by function (and two helpers it
calls), and the differential test checks it as a whole against libavfilter;
the policy built on it lives in ``ffmpeg_filters``.
"""

import re

import attr

#: libavfilter/graphparser.c, libavutil/avstring.c and libavutil/opt.c WHITESPACES.
WHITESPACES = " \n\t\r"
#: Bytes of ``create_filter``'s ``name2[30]`` buffer searched for ``@``.
_NAME2_BYTES = 29

#: Positional option names per filter, in ffmpeg 5.1's ``av_opt_next`` order
#: with constants and aliases (same offset) left out: the i-th positional
#: value sets the i-th name. Only for filters whose values are checked by
#: name (bounds); the differential test checks them against ffmpeg.
POSITIONAL = {
    "scale": ("w", "h", "flags", "interl", "in_color_matrix", "out_color_matrix", "in_range",
              "out_range", "in_v_chr_pos", "in_h_chr_pos", "out_v_chr_pos", "out_h_chr_pos",
              "force_original_aspect_ratio", "force_divisible_by", "param0", "param1", "eval"),
    "scale2ref": ("w", "h", "flags", "interl", "in_color_matrix", "out_color_matrix",
                  "in_range", "out_range", "in_v_chr_pos", "in_h_chr_pos", "out_v_chr_pos",
                  "out_h_chr_pos", "force_original_aspect_ratio", "force_divisible_by",
                  "param0", "param1", "eval"),
    "pad": ("width", "height", "x", "y", "color", "eval", "aspect"),
    "crop": ("out_w", "out_h", "x", "y", "keep_aspect", "exact"),
    "fps": ("fps", "start_time", "round", "eof_action"),
    "framerate": ("fps", "interp_start", "interp_end", "scene", "flags"),
    "minterpolate": ("fps", "mi_mode", "mc_mode", "me_mode", "me", "mb_size", "search_param",
                     "vsbmc", "scd", "scd_threshold"),
    "apad": ("packet_size", "pad_len", "whole_len", "pad_dur", "whole_dur"),
    "tpad": ("start", "stop", "start_mode", "stop_mode", "start_duration", "stop_duration",
             "color"),
    "asetrate": ("sample_rate",), "aresample": ("sample_rate",),
    "atempo": ("tempo",),
    "tinterlace": ("mode",),
    "adelay": ("delays", "all"),
    "tile": ("layout", "nb_frames", "margin", "padding", "color", "overlap", "init_padding"),
    "asetnsamples": ("nb_out_samples", "pad"),
    "split": ("outputs",), "asplit": ("outputs",),
    "select": ("expr", "outputs"), "aselect": ("expr", "outputs"),
    "concat": ("n", "v", "a", "unsafe"),
    "amix": ("inputs", "duration", "dropout_transition", "weights", "normalize"),
    "hstack": ("inputs", "shortest"), "vstack": ("inputs", "shortest"), "amerge": ("inputs",),
}
#: Other spellings of the same option (same offset) -> the name in POSITIONAL.
ALIASES = {
    "scale": {"width": "w", "height": "h"}, "scale2ref": {"width": "w", "height": "h"},
    "pad": {"w": "width", "h": "height"}, "crop": {"w": "out_w", "h": "out_h"},
    "asetrate": {"r": "sample_rate"}, "aformat": {"r": "sample_rates"},
    "aresample": {"osr": "out_sample_rate", "isr": "in_sample_rate"}, "asetnsamples": {"n": "nb_out_samples", "p": "pad"},
    "select": {"e": "expr", "n": "outputs"}, "aselect": {"e": "expr", "n": "outputs"},
}

_LABEL_RX = re.compile(r"[A-Za-z0-9_.:]{1,64}")
_NAME_RX = re.compile(r"[A-Za-z0-9_]{1,40}(@[A-Za-z0-9_]{1,40})?")
#: libswscale's flag names (``ffmpeg -h full``, SWScaler sws_flags). ffmpeg
#: 5.1 crashes (SIGSEGV in scale's init) on any other name in scale's flags.
SWS_FLAG_NAMES = frozenset({
    "fast_bilinear", "bilinear", "bicubic", "experimental", "neighbor", "area", "bicublin",
    "gauss", "sinc", "lanczos", "spline", "print_info", "accurate_rnd", "full_chroma_int",
    "full_chroma_inp", "bitexact", "error_diffusion"})
_SWS_RX = re.compile(r"[+-]?[a-z_]{1,20}([+-][a-z_]{1,20}){0,16}")


def sws_flags_ok(value):
    """True if ``value`` is libswscale flag names joined by ``+``/``-`` and
    nothing else (no quotes, escapes, ``:``)."""
    return bool(_SWS_RX.fullmatch(value)) and all(
        name in SWS_FLAG_NAMES for name in re.split(r"[+-]", value) if name)


class FilterGraphError(ValueError):
    """A graph ffmpeg cannot parse, or (strict) one that reads two ways.

    ``str(e)`` is a reason meant for a person; ``pos`` the character offset
    in the graph text where it was found (or None).
    """

    def __init__(self, reason, pos=None):
        super().__init__(reason if pos is None else f"{reason} (at character {pos})")
        self.reason = reason
        self.pos = pos


@attr.s(frozen=True, auto_attribs=True)
class Token:
    """One ``av_get_token`` result.

    ``text``: the token as ffmpeg gets it; ``start``/``end``: its span in
    the input (leading whitespace skipped, up to the terminator);
    ``quoted``/``escaped``: a ``'`` or ``\\`` was interpreted;
    ``unterminated``: a quote ran to the end of the input;
    ``lone_backslash``: a ``\\`` at the very end was kept as a character.
    """

    text: str
    start: int
    end: int
    quoted: bool = False
    escaped: bool = False
    unterminated: bool = False
    lone_backslash: bool = False

    @property
    def plain(self):
        """True if the token holds no quote or escape of any kind."""
        return not (self.quoted or self.escaped or self.unterminated or self.lone_backslash)


def get_token(text, pos, term):
    """``av_get_token(&buf, term)`` on ``text`` from ``pos``: (Token, new_pos).

    ``new_pos`` is where ffmpeg's ``*buf`` is left: at the terminator (one
    of ``term``) or at the end of the text.
    """
    n = len(text)
    while pos < n and text[pos] in WHITESPACES:
        pos += 1
    start = pos
    out, end = [], 0
    quoted = escaped = unterminated = lone = False
    while pos < n and text[pos] not in term:
        c = text[pos]
        pos += 1
        if c == "\\" and pos < n:
            out.append(text[pos])
            pos += 1
            end = len(out)
            escaped = True
        elif c == "'":
            quoted = True
            while pos < n and text[pos] != "'":
                out.append(text[pos])
                pos += 1
            if pos < n:
                pos += 1
                end = len(out)
            else:
                unterminated = True
        else:
            if c == "\\":
                lone = True
            out.append(c)
    while len(out) > end and out[-1] in WHITESPACES:
        out.pop()
    return Token("".join(out), start, pos, quoted, escaped, unterminated, lone), pos


@attr.s(frozen=True, auto_attribs=True)
class Option:
    """One item of a filter's options string, as ``process_options`` reads it.

    ``key``: the key as written (None for a positional value); ``name``: the
    option it sets, for named ones the key, for positional ones the name
    from POSITIONAL (None when the filter has no table or the table has run
    out); ``value``: after both rounds of unescaping; ``index``: position
    among the filter's items.
    """

    key: object
    name: object
    value: str
    index: int
    token: Token = attr.ib(eq=False, repr=False, default=None)


@attr.s(frozen=True, auto_attribs=True)
class Filter:
    """One filter instance of a graph.

    ``name``: the filter ffmpeg looks up (``avfilter_get_by_name``);
    ``instance``: the instance name ffmpeg gives it (``name@id`` as
    written, or ``Parsed_<name>_<index>`` cut to 29 bytes); ``args``: the
    options string it gets (None without ``=``); ``inputs``/``outputs``:
    labels; ``init_args``: what the filter is initialized with: ``args``,
    except that ffmpeg 5.1's ``create_filter`` appends ``:flags=<sws_flags>``
    to a ``scale`` whose args lack the text ``flags`` (or uses it alone);
    ``options``: ``split_options(init_args)``; ``index``: ffmpeg's filter
    index in the graph.
    """

    name: str
    instance: str
    args: object
    init_args: object
    inputs: tuple
    outputs: tuple
    options: tuple
    index: int
    name_token: Token = attr.ib(eq=False, repr=False, default=None)
    args_token: object = attr.ib(eq=False, repr=False, default=None)

    def value_of(self, option_name):
        """The value the last item setting ``option_name`` (or an alias) gives, or None."""
        aliases = ALIASES.get(self.name, {})
        found = None
        for opt in self.options:
            if opt.name is not None and aliases.get(opt.name, opt.name) == option_name:
                found = opt.value
        return found


@attr.s(frozen=True, auto_attribs=True)
class Graph:
    """``sws_flags``: the text after ``sws_flags=`` up to the first ``;`` (None
    without that segment); ``filters``: in ffmpeg's order."""

    sws_flags: object
    filters: tuple


def _is_key_char(c):
    """opt.c ``is_key_char``."""
    return ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9") or c in "-_/."


def _get_key(text, pos):
    """opt.c ``get_key(&opts, "=", &key)``: (key, pos after '=') or (None, pos)."""
    p = pos
    n = len(text)
    while p < n and text[p] in WHITESPACES:
        p += 1
    key_start = p
    while p < n and _is_key_char(text[p]):
        p += 1
    key_end = p
    while p < n and text[p] in WHITESPACES:
        p += 1
    if p >= n or text[p] != "=":
        return None, pos
    return text[key_start:key_end], p + 1


def split_options(filter_name, args, *, strict=False):
    """A filter's options string -> tuple of Option, as ``process_options``.

    Positional values are named from POSITIONAL[filter_name] in order.
    strict: a positional value after a named one, more positional values
    than the table names, an empty key, an unterminated quote or a lone
    trailing backslash raise FilterGraphError.
    """
    if not args:
        return ()
    table = POSITIONAL.get(filter_name)
    items, pos, named_seen, n = [], 0, False, len(args)
    while pos < n:
        key, vpos = _get_key(args, pos)
        token, pos = get_token(args, vpos if key is not None else pos, ":")
        if pos < n:
            pos += 1
        index = len(items)
        if key is None:
            if strict and named_seen:
                raise FilterGraphError(f"filter {filter_name!r}: a value without a name "
                                       f"({token.text!r}) after a named option; name it")
            # After a named option ffmpeg's choice depends on option offsets: unknown.
            name = table[index] if table and not named_seen and index < len(table) else None
            if strict and table is not None and name is None:
                raise FilterGraphError(f"filter {filter_name!r}: too many unnamed values")
        else:
            named_seen = True
            name = key
            if strict and not key:
                raise FilterGraphError(f"filter {filter_name!r}: an option with an empty name")
        if strict and (token.unterminated or token.lone_backslash):
            raise FilterGraphError(f"filter {filter_name!r}: unterminated quote or lone "
                                   "backslash in an option value")
        items.append(Option(key, name, token.text, index, token))
    return tuple(items)


def _instance(name, index):
    """``create_filter``'s split of ``name`` -> (filter name, instance name)."""
    raw = name.encode("utf-8", "surrogatepass")
    head = raw[:_NAME2_BYTES]
    at = head.find(b"@")
    if at >= 0 and at + 1 < len(raw):
        return raw[:at].decode("utf-8", "replace"), name
    inst = f"Parsed_{name}_{index}".encode("utf-8", "surrogatepass")[:_NAME2_BYTES]
    return name, inst.decode("utf-8", "replace")


def _labels(text, pos, strict):
    """``parse_inputs`` / ``parse_outputs`` label reading: (labels, pos)."""
    labels = []
    while pos < len(text) and text[pos] == "[":
        start = pos
        token, pos = get_token(text, pos + 1, "]")
        if not token.text:
            raise FilterGraphError("empty label []", start)
        if pos >= len(text) or text[pos] != "]":
            raise FilterGraphError("'[' without a matching ']'", start)
        raw = text[start + 1:pos]
        pos += 1
        if strict and not (token.plain and raw == token.text and _LABEL_RX.fullmatch(raw)):
            raise FilterGraphError(f"label [{raw}] may hold only letters, digits, '_', '.' "
                                   "and ':' (no quotes, escapes or spaces)", start)
        labels.append(token.text)
        while pos < len(text) and text[pos] in WHITESPACES:
            pos += 1
    return tuple(labels), pos


def _sws_flags(text, pos, strict):
    """``parse_sws_flags``: (value or None, pos)."""
    if not text.startswith("sws_flags=", pos):
        return None, pos
    semi = text.find(";", pos)
    if semi < 0:
        raise FilterGraphError("sws_flags not terminated with ';'", pos)
    value = text[pos + len("sws_flags="):semi]
    if strict and not sws_flags_ok(value):
        raise FilterGraphError("sws_flags=... may hold only libswscale flag names (bicubic, "
                               "lanczos, accurate_rnd...) joined by + or - (ffmpeg ends it at "
                               "the first ';', ignores quotes in it, and adds it to every "
                               "scale filter's options)", pos)
    return value, semi + 1


def parse(text, *, strict=False):
    """A filter graph description -> Graph, as ``avfilter_graph_parse2`` reads it.

    Raises FilterGraphError where ffmpeg's parser fails (empty or unmatched
    label, empty filter name, text it cannot parse, unterminated
    ``sws_flags``) and, with strict, where the text reads two ways (see the
    module docstring). Linking (pad counts, media types) is not checked:
    ffmpeg refuses those graphs itself, before running anything.
    """
    if not isinstance(text, str):
        raise FilterGraphError("a filter graph must be a string")
    if "\x00" in text:
        raise FilterGraphError("NUL in filter graph")
    pos = 0
    n = len(text)
    while pos < n and text[pos] in WHITESPACES:
        pos += 1
    sws, pos = _sws_flags(text, pos, strict)
    filters = []
    while True:
        while pos < n and text[pos] in WHITESPACES:
            pos += 1
        inputs, pos = _labels(text, pos, strict)
        name_tok, pos = get_token(text, pos, "=,;[")
        args_tok = None
        if pos < n and text[pos] == "=":
            args_tok, pos = get_token(text, pos + 1, "[],;")
        index = len(filters)
        if not name_tok.text:
            raise FilterGraphError("empty filter name (two separators in a row, or a "
                                   "separator at the start or end?)", name_tok.start)
        if strict and not name_tok.plain:
            raise FilterGraphError(f"filter name {name_tok.text!r} is written with quotes or "
                                   "escapes", name_tok.start)
        if strict and args_tok is not None and (args_tok.unterminated
                                                 or args_tok.lone_backslash):
            raise FilterGraphError(f"filter {name_tok.text!r}: unterminated quote or lone "
                                   "trailing backslash in its options", args_tok.start)
        fname, instance = _instance(name_tok.text, index)
        args = args_tok.text if args_tok is not None else None
        init_args = args
        if fname == "scale" and sws is not None and (args is None or "flags" not in args):
            init_args = "flags=" + sws if args is None else f"{args}:flags={sws}"
        options = split_options(fname, init_args, strict=strict)
        outputs, pos = _labels(text, pos, strict)
        filters.append(Filter(fname, instance, args, init_args, inputs, outputs, options,
                              index, name_tok, args_tok))
        while pos < n and text[pos] in WHITESPACES:
            pos += 1
        if pos >= n:
            break
        chr_ = text[pos]
        pos += 1
        if chr_ not in ",;":
            raise FilterGraphError(f"unexpected {chr_!r} in filter graph", pos - 1)
    return Graph(sws, tuple(filters))


# --- values: durations, rates, sizes (for bounds) ----------------------------------------

_NUMBER_RX = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_RATE_NAMES = {"ntsc": 30000 / 1001, "pal": 25.0, "qntsc": 30000 / 1001, "qpal": 25.0,
               "sntsc": 30000 / 1001, "spal": 25.0, "film": 24.0, "ntsc-film": 24000 / 1001}


def number(value):
    """A plain decimal number (``12``, ``-1.5``, ``2e3``) -> float, else None."""
    text = value.strip()
    return float(text) if _NUMBER_RX.fullmatch(text) else None


def rate(value):
    """``av_parse_video_rate`` spellings: ``25``, ``30000/1001``, ``29.97``,
    ``ntsc``... -> frames per second (float), else None (an expression)."""
    text = value.strip()
    if text in _RATE_NAMES:
        return _RATE_NAMES[text]
    num, slash, den = text.partition("/")
    a = number(num)
    if a is None:
        return None
    if not slash:
        return a
    b = number(den)
    if not b:
        return None
    return a / b


_DURATION_RX = re.compile(r"(-)?(?:(?:(\d+):)?(\d+):)?(\d+(?:\.\d*)?|\.\d+)(s|ms|us)?")


def duration(value):
    """``av_parse_time`` duration spellings (``90``, ``1.5``, ``01:02:03.5``,
    ``500ms``) -> seconds (float), else None."""
    m = _DURATION_RX.fullmatch(value.strip())
    if not m:
        return None
    sign, hours, minutes, seconds, unit = m.groups()
    if unit and (hours or minutes):
        return None
    total = float(seconds) + 60 * int(minutes or 0) + 3600 * int(hours or 0)
    total *= {"ms": 1e-3, "us": 1e-6}.get(unit, 1.0)
    return -total if sign else total
