"""Differential tests: nommer's reading of filter graphs against ffmpeg's own.

The oracle is libavfilter itself (the ``libavfilter.so.8`` the Debian
``ffmpeg`` binary links), driven through ctypes in a child process (ffmpeg
5.1 crashes on some graphs, and filters run their init while parsing):
``avfilter_graph_parse2`` is the very call ffmpeg makes for ``-vf``,
``-af``, ``-filter`` and ``-filter_complex``. For each graph it reports the
filters created (filter name, instance name), every ``Setting 'key' to
value 'v'`` line libavfilter logs while initializing them, ``No such
filter`` names, and every log context (a ``[file @ ...]`` context means a
file was opened). ``test_cli_agrees_with_library`` checks, on a sample, that
the ffmpeg command line logs the same settings for the same graph, so the
in-process oracle stands for the binary the worker runs.

Properties, over hypothesis-generated graphs mixing quotes, escapes, labels,
``sws_flags`` prefixes, separators, whitespace, ``@`` instances, allowed and
refused filter names:

* the mirror (``filtergraph.parse``) agrees with libavfilter: same filters,
  same option keys and values (or libavfilter fails and its partial work is
  a prefix of the mirror's view);
* every graph the validator (``ffmpeg_options.filtergraph``) accepts is one
  libavfilter reads exactly as the validator did: no other filter created or
  looked up, no other option set, no file opened, no crash.

Normal run: a few hundred graphs (seconds). Long run:
``NOMMER_FUZZ_EXAMPLES=5000 pytest -s tests/workerd/test_filtergraph_differential.py``
(figures printed with -s).
"""

import functools
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nommer.workerd.nommers import ffmpeg_filters
from nommer.workerd.nommers import ffmpeg_options as o
from nommer.workerd.nommers import filtergraph as fg

EXAMPLES = int(os.environ.get("NOMMER_FUZZ_EXAMPLES", "300"))
CLI_GRAPHS = int(os.environ.get("NOMMER_FUZZ_CLI_GRAPHS", "60"))
FFMPEG = shutil.which("ffmpeg")
#: Longest libavfilter may take over one graph before it is taken as hung.
ORACLE_TIMEOUT_S = 10

pytestmark = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed")


# --- the oracle (child process) --------------------------------------------------------

def _oracle_main():
    """Read JSON lines ``{"graph": str, "sws": str|null}``, answer one JSON line each."""
    import ctypes

    avutil = ctypes.CDLL("libavutil.so.57")
    lavfi = ctypes.CDLL("libavfilter.so.8")
    lavfi.avfilter_graph_alloc.restype = ctypes.c_void_p
    lavfi.avfilter_graph_parse2.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                            ctypes.POINTER(ctypes.c_void_p),
                                            ctypes.POINTER(ctypes.c_void_p)]
    lavfi.avfilter_graph_free.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
    lavfi.avfilter_inout_free.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
    avutil.av_strdup.restype = ctypes.c_void_p
    avutil.av_strdup.argtypes = [ctypes.c_char_p]

    class AVFilter(ctypes.Structure):
        _fields_ = [("name", ctypes.c_char_p)]

    class AVFilterContext(ctypes.Structure):
        _fields_ = [("av_class", ctypes.c_void_p), ("filter", ctypes.POINTER(AVFilter)),
                    ("name", ctypes.c_char_p)]

    class AVFilterGraph(ctypes.Structure):  # public layout, libavfilter 8
        _fields_ = [("av_class", ctypes.c_void_p),
                    ("filters", ctypes.POINTER(ctypes.POINTER(AVFilterContext))),
                    ("nb_filters", ctypes.c_uint), ("scale_sws_opts", ctypes.c_void_p)]

    callback_type = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p,
                                     ctypes.c_void_p)
    avutil.av_log_format_line2.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p,
                                           ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                                           ctypes.POINTER(ctypes.c_int)]
    lines = []

    @callback_type
    def on_log(ptr, level, fmt, vl):
        buf = ctypes.create_string_buffer(8192)
        prefix = ctypes.c_int(1)
        avutil.av_log_format_line2(ptr, level, fmt, vl, buf, len(buf), ctypes.byref(prefix))
        lines.append(buf.value.decode("utf-8", "replace"))

    avutil.av_log_set_callback(on_log)
    avutil.av_log_set_level(48)  # AV_LOG_DEBUG: process_options logs each setting

    for line in sys.stdin:
        request = json.loads(line)
        del lines[:]
        graph = ctypes.c_void_p(lavfi.avfilter_graph_alloc())
        gs = ctypes.cast(graph, ctypes.POINTER(AVFilterGraph)).contents
        if request.get("sws"):
            gs.scale_sws_opts = avutil.av_strdup(request["sws"].encode())
        ins, outs = ctypes.c_void_p(), ctypes.c_void_p()
        ret = lavfi.avfilter_graph_parse2(graph, request["graph"].encode("utf-8"),
                                          ctypes.byref(ins), ctypes.byref(outs))
        filters = [[gs.filters[i].contents.filter.contents.name.decode(),
                    gs.filters[i].contents.name.decode("utf-8", "replace")]
                   for i in range(gs.nb_filters)]
        lavfi.avfilter_inout_free(ctypes.byref(ins))
        lavfi.avfilter_inout_free(ctypes.byref(outs))
        lavfi.avfilter_graph_free(ctypes.byref(graph))
        sys.stdout.write(json.dumps({"ret": ret, "filters": filters, "log": list(lines)}) + "\n")
        sys.stdout.flush()


_PREFIX_RX = re.compile(r"\[([^\[\]]*?) @ 0x[0-9a-f]+\] ")
_SETTING_RX = re.compile(r"Setting '([^']*)' to value '(.*)'\n?$", re.DOTALL)
_NOSUCH_RX = re.compile(r"No such filter: '(.*)'\n?$", re.DOTALL)


def digest_log(lines):
    """libavfilter log lines -> (settings [(context, key, value)], no-such names, contexts)."""
    settings_, nosuch, contexts = [], [], set()
    for line in lines:
        ctxs = _PREFIX_RX.findall(line)
        contexts.update(ctxs)
        body = _PREFIX_RX.sub("", line)
        m = _SETTING_RX.match(body)
        if m and ctxs:
            settings_.append((ctxs[-1], m.group(1), m.group(2)))
        m = _NOSUCH_RX.match(body)
        if m:
            nosuch.append(m.group(1))
    return settings_, nosuch, contexts


class Oracle:
    """libavfilter in a child process; ``ask(graph)`` -> dict (``crashed`` True if it died)."""

    def __init__(self):
        self.workdir = tempfile.mkdtemp(prefix="fg-oracle-")
        self.proc = None
        self.calls = 0
        self.crashes = 0
        self.hangs = 0

    def _start(self):
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--oracle"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, cwd=self.workdir, text=True,
                                     env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})

    def ask(self, graph, sws=None, timeout_s=ORACLE_TIMEOUT_S):
        """libavfilter's reading of ``graph``; ``crashed`` (and ``hung`` when it
        did not answer within ``timeout_s``) if the child died or was killed."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.calls += 1
        hung = False
        try:
            self.proc.stdin.write(json.dumps({"graph": graph, "sws": sws}) + "\n")
            self.proc.stdin.flush()
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
            if ready:
                answer = self.proc.stdout.readline()
            else:
                hung, answer = True, ""
                self.proc.kill()
        except BrokenPipeError:
            answer = ""
        if not answer:
            self.proc.wait()
            self.proc = None
            self.crashes += 1
            self.hangs += hung
            return {"crashed": True, "hung": hung}
        result = json.loads(answer)
        result["settings"], result["nosuch"], result["contexts"] = digest_log(result["log"])
        result["crashed"] = False
        return result

    def files_written(self):
        return sorted(os.listdir(self.workdir))

    def clear_files(self):
        """Remove what filters wrote into the oracle's directory (metadata=file=...)."""
        for name in os.listdir(self.workdir):
            os.unlink(os.path.join(self.workdir, name))

    def close(self):
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def oracle():
    o_ = Oracle()
    yield o_
    o_.close()


# --- comparing ---------------------------------------------------------------------------

def expected_settings(graph):
    """The mirror's view as [(instance, key or None, value)], None where the
    option name of a positional value is not known to the mirror."""
    return [(f.instance, opt.key if opt.key is not None else opt.name, opt.value)
            for f in graph.filters for opt in f.options]


def _same(mine, theirs):
    return mine[0] == theirs[0] and mine[2] == theirs[2] and mine[1] in (None, theirs[1])


#: Log contexts of libavfilter's own machinery (not filters, not files).
BENIGN_CONTEXTS = frozenset({"AVFilterGraph", "swscaler", "Eval", "SWR"})


@functools.lru_cache(maxsize=None)
def priv_class_name(filter_name):
    """The name a filter's options object logs as (``(h|v)stack`` for hstack)."""
    if not re.fullmatch(r"[A-Za-z0-9_]{1,40}", filter_name):
        return filter_name
    out = subprocess.run([FFMPEG, "-hide_banner", "-h", f"filter={filter_name}"],
                         capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"^(\S+) AVOptions:$", out, re.M)
    return m.group(1) if m else filter_name


def differences(graph_text, mirror, result, *, all_contexts=False):
    """Ways libavfilter's reading differs from the mirror's ([] if none).

    ``mirror``: a filtergraph.Graph, or the FilterGraphError it raised.
    Log contexts that are filter instances must be the mirror's; with
    ``all_contexts`` every context must be a filter of the mirror's or
    libavfilter's own machinery (so no file, URL or device was opened).
    """
    if result["crashed"]:
        return ["ffmpeg hung" if result.get("hung") else "ffmpeg crashed"]
    diffs = []
    ok = result["ret"] >= 0
    if isinstance(mirror, fg.FilterGraphError):
        if ok:
            diffs.append(f"mirror refused ({mirror}) but ffmpeg parsed it into "
                         f"{result['filters']}")
        return diffs
    mine_filters = [[f.name, f.instance] for f in mirror.filters]
    mine = expected_settings(mirror)
    theirs = result["settings"]
    if ok:
        if result["filters"] != mine_filters:
            diffs.append(f"filters: mirror {mine_filters}, ffmpeg {result['filters']}")
        if len(mine) != len(theirs) or not all(map(_same, mine, theirs)):
            diffs.append(f"settings: mirror {mine}, ffmpeg {theirs}")
    else:
        if len(theirs) > len(mine) or not all(map(_same, mine, theirs)):
            diffs.append(f"settings before ffmpeg failed: mirror {mine}, ffmpeg {theirs}")
        names = {f.name for f in mirror.filters}
        for name in result["nosuch"]:
            if name not in names:
                diffs.append(f"ffmpeg looked up filter {name!r}, mirror saw {sorted(names)}")
    # A filter logs as its instance, its options object by its class's name.
    known = {f.instance for f in mirror.filters} | {f.name for f in mirror.filters} | {
        priv_class_name(f.name) for f in mirror.filters}
    for ctx in result["contexts"]:
        if not all_contexts and not (ctx.startswith("Parsed_") or "@" in ctx):
            continue
        if ctx not in known and ctx not in BENIGN_CONTEXTS:
            diffs.append(f"log context {ctx!r} is no filter the mirror saw")
    return diffs


def mirror_of(text, strict=False):
    try:
        return fg.parse(text, strict=strict)
    except fg.FilterGraphError as e:
        return e


def validator_accepts(text):
    try:
        o.filtergraph(text)
        return True
    except ValueError:
        return False


# --- graph generation ----------------------------------------------------------------------

OUT = "fuzz-out.txt"  # relative: the oracle runs in a scratch directory
ALLOWED_POOL = ["null", "anull", "scale", "hflip", "vflip", "fps", "setpts", "asetpts",
                "volume", "format", "split", "asplit", "trim", "atrim", "pad", "crop", "apad",
                "tpad", "select", "aselect", "copy", "settb", "setsar", "aresample",
                "transpose", "negate", "concat", "overlay", "adelay", "asetrate", "atempo",
                "showinfo", "hstack", "yadif", "framerate", "tinterlace", "asetnsamples"]
REFUSED_POOL = ["metadata", "ametadata", "movie", "amovie", "sendcmd", "asendcmd", "psnr",
                "ssim", "lut3d", "sws_flags", "nosuchfilter"]
OPTION_ATOMS = ["640", "-2", "w=64", "h=32", "iw/2", "ih*2", "flags=bicubic", "bicubic",
                "mode=print", f"file={OUT}", f"filename={OUT}", OUT, "1", "0.5", "3", "-1",
                "stop=3", "stop=-1", "whole_dur=1", "pad_dur=2", "pad_len=100", "expr=PTS",
                "PTS-STARTPTS", "eq(n\\,0)", "'a:b'", "x", "30000/1001", "fps=25", "25",
                "c=red", "enable=1", "d=1", "start=1", "duration=1", "n=2", "yuv420p",
                "stereo|c0=c1", "1000|2000", "tempo=2", "outputs=2", "20000", "delays=10"]
TRICKY = ["'", "\\", "\\'", "\\\\", ",", ";", "[", "]", ":", "=", " ", "\t", "\n", "@",
          "sws_flags=", "sws_flags=bicubic;", "[0:v]", "[a]", "[out]", "'[x]'", "\\,",
          "\\;", "\\:", "''", "' '", "movie=", f"metadata=mode=print:file={OUT}", "x'y"]
#: Options each filter takes, so well-formed graphs get through libavfilter.
FILTER_OPTIONS = {
    "scale": ["640", "-2", "w=64", "h=32", "iw/2", "flags=bicubic", "eval=frame", "32:16"],
    "fps": ["25", "fps=30000/1001", "round=near", "fps=ntsc"],
    "setpts": ["PTS-STARTPTS", "expr=2*PTS", "'N/(25*TB)'"],
    "asetpts": ["PTS-STARTPTS", "expr=N/SR/TB"],
    "volume": ["0.5", "volume=2", "precision=fixed", "'volume=0.5:precision=float'"],
    "format": ["yuv420p", "pix_fmts=yuv420p|rgb24"],
    "trim": ["start=1", "duration=2", "end_frame=5"], "atrim": ["start=1", "end=2"],
    "pad": ["64", "64:64:0:0", "w=iw+10", "color=red"], "crop": ["16:16", "w=iw/2", "x=0"],
    "apad": ["whole_dur=1", "pad_len=100", "pad_dur=0.5"],
    "tpad": ["stop=3", "start_duration=1", "stop_mode=clone"],
    "select": ["'eq(n\\,0)'", "expr=1", "outputs=2", "eq(n\\,0)"],
    "aselect": ["expr=1", "'gte(t\\,1)'"], "split": ["2", "outputs=3"], "asplit": ["2"],
    "settb": ["AVTB", "expr=1/25"], "setsar": ["1", "sar=16/9"], "transpose": ["1", "dir=clock"],
    "aresample": ["48000", "async=1", "osr=44100"], "concat": ["n=1", "v=1:a=0"],
    "overlay": ["10:10", "x=W-w"], "adelay": ["1000|2000", "delays=10:all=1"],
    "asetrate": ["44100", "r=48000"], "atempo": ["2", "tempo=0.5"], "hstack": ["inputs=2"],
    "yadif": ["0", "mode=send_field"], "framerate": ["50", "fps=25"],
    "tinterlace": ["merge", "mode=4"], "asetnsamples": ["512", "n=1024:p=0"],
}
SWS_VALUES = ["bicubic", "lanczos+accurate_rnd", "bicubic'", "bicubic:h=99", "area",
              "bicubic' ", "'x", "bilinear\\"]


@st.composite
def labels(draw):
    name = draw(st.sampled_from(["0:v", "0:a", "a", "b", "out", "in", "x1", "0"]))
    return draw(st.sampled_from(["[{}]", "[{}] ", " [{}]", "['{}']", "[{} ]"])).format(name)


@st.composite
def options_text(draw, hostile):
    atoms = draw(st.lists(st.sampled_from(OPTION_ATOMS), min_size=1, max_size=4))
    text = ":".join(atoms)
    style = draw(st.sampled_from(["plain", "plain", "quoted", "escaped"] if hostile else
                                 ["plain", "plain", "plain", "quoted"]))
    if style == "quoted":
        text = "'" + text + "'"
    elif style == "escaped":
        text = text.replace(":", "\\:").replace(",", "\\,")
    return text


@st.composite
def graphs(draw, hostile=True):
    """A filter graph text; hostile graphs mix in refused names and tricky pieces."""
    names = ALLOWED_POOL + (REFUSED_POOL if hostile else [])
    parts = []
    if draw(st.integers(0, 3)) == 0:
        sws = draw(st.sampled_from(SWS_VALUES if hostile else SWS_VALUES[:2]))
        parts.append(f"sws_flags={sws};")
    for i in range(draw(st.integers(1, 4))):
        if i:
            parts.append(draw(st.sampled_from([",", ";", " , ", "; ", ",\n", "\t;"])))
        parts.extend(draw(st.lists(labels(), max_size=2 if hostile else 1)))
        name = draw(st.sampled_from(names))
        if draw(st.integers(0, 4)) == 0:
            name += "@" + draw(st.sampled_from(["i", "x_1", "", "a@b", "movie"]))
        parts.append(name)
        if draw(st.booleans()):
            own = FILTER_OPTIONS.get(name.partition("@")[0])
            if own and (draw(st.integers(0, 4)) or not hostile):
                parts.append("=" + ":".join(draw(st.lists(st.sampled_from(own), min_size=1,
                                                          max_size=2))))
            else:
                parts.append("=" + draw(options_text(hostile)))
        parts.extend(draw(st.lists(labels(), max_size=2 if hostile else 1)))
    text = "".join(parts)
    if hostile:
        for _ in range(draw(st.integers(0, 3))):
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(st.sampled_from(TRICKY)) + text[at:]
    return text


# --- the tests -----------------------------------------------------------------------------

class Stats:
    """Figures of a run, printed at the end of the module (pytest -s)."""

    graphs = ffmpeg_ok = accepted_tried = accepted = accepted_ffmpeg_ok = differences = 0
    crashes = cli = cli_settings = 0


STATS = Stats()
#: Graphs libavfilter did not finish parsing (reported at the end).
HUNG = []


def teardown_module(module):
    print(f"\nfilter graph fuzz: mirror vs libavfilter: {STATS.graphs} graphs "
          f"({STATS.ffmpeg_ok} parsed by libavfilter, {STATS.crashes} crashed it); "
          f"validator: {STATS.accepted} of {STATS.accepted_tried} graphs accepted "
          f"({STATS.accepted_ffmpeg_ok} parsed by libavfilter); command line: {STATS.cli} "
          f"ffmpeg runs ({STATS.cli_settings} with settings to compare); "
          f"{STATS.differences} differences")
    for text in HUNG:
        print(f"libavfilter hung on {text!r}")


FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(text=graphs())
def test_mirror_matches_libavfilter(oracle, text):
    """The mirror reads every generated graph as libavfilter does (hostile
    graphs: quotes, escapes, labels, sws_flags, refused names)."""
    mirror = mirror_of(text)
    result = oracle.ask(text)
    oracle.clear_files()  # refused filters (metadata) may write there: expected here
    STATS.graphs += 1
    STATS.ffmpeg_ok += 0 if result["crashed"] else result["ret"] >= 0
    STATS.crashes += result["crashed"]
    found = differences(text, mirror, result)
    if result["crashed"]:
        # ffmpeg 5.1 crashes (unknown scale flags) or loops on some graphs: nothing
        # to compare, but the validator must not accept one.
        if result["hung"]:
            HUNG.append(text)
        found = [differences(text, mirror, result)[0]] if validator_accepts(text) else []
    STATS.differences += bool(found)
    assert not found, (text, found)


@FUZZ
@given(text=st.one_of(graphs(hostile=False), graphs()))
def test_accepted_graphs_match_libavfilter(oracle, text):
    """Every graph the validator accepts makes libavfilter create exactly the
    validator's filters with exactly its option values, and open no file."""
    STATS.accepted_tried += 1
    if not validator_accepts(text):
        return
    STATS.accepted += 1
    graph = fg.parse(text, strict=True)
    oracle.clear_files()
    result = oracle.ask(text)
    STATS.accepted_ffmpeg_ok += not result["crashed"] and result["ret"] >= 0
    found = differences(text, graph, result, all_contexts=True)
    for f in (result.get("filters") or []):
        if f[0] not in ffmpeg_filters.ALLOWED_FILTERS:
            found.append(f"ffmpeg created refused filter {f[0]!r}")
    if oracle.files_written():
        found.append(f"files written: {oracle.files_written()}")
    STATS.differences += bool(found)
    assert not found, (text, found)


# Regression cases: (id, graph, the filter ffmpeg creates, whether the reading
# nommer had before filtergraph.py (kept below as _old_split) missed it and
# let the graph through).
REGRESSIONS = [
    ("sws-quote-hides-metadata",
     f"sws_flags=bicubic';[0:v]metadata=mode=print:file={OUT}'", "metadata", True),
    ("sws-quote-hides-movie", "sws_flags=bicubic';[0:v]null,movie=nothing.mkv'", "movie", True),
    ("sws-quote-hides-sendcmd", "sws_flags=bicubic';[0:v]sendcmd=filename=nothing.cmd'",
     "sendcmd", True),
    ("backslash-in-quotes-closes-the-quote", "drawbox='1\\',movie=nothing.mkv,null='",
     "movie", True),
    ("quote-inside-label", "[a']']null,movie=nothing.mkv", "movie", False),
    ("escaped-name", "null,mov\\ie=nothing.mkv", "movie", False),
    ("quoted-name", f"null,'metadata'=mode=print:file={OUT}", "metadata", False),
    ("escaped-semicolon-is-not-quoted", f"null=\\;metadata=mode=print:file={OUT}", None, False),
]


def _old_split(graph):
    """nommer's reading before filtergraph.py (commit d5aed3f), kept to show the
    regression cases fail against it: (name, args) per filter."""
    segments, cur, i, quoted = [], [], 0, False
    while i < len(graph):
        ch = graph[i]
        if ch == "\\" and i + 1 < len(graph):
            cur.append(ch + graph[i + 1])
            i += 2
            continue
        if ch == "'":
            quoted = not quoted
            cur.append(ch)
        elif not quoted and ch == "[":
            end = graph.find("]", i)
            if end < 0:
                raise ValueError("unbalanced [")
            i = end
        elif not quoted and ch in ",;":
            segments.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    if quoted:
        raise ValueError("unbalanced quote")
    segments.append("".join(cur))
    out = []
    for seg in segments:
        seg = seg.strip()
        if seg:
            name, _, args = seg.partition("=")
            out.append((name.strip().split("@", 1)[0],
                        re.sub(r"\\(.)", r"\1", args).replace("'", "")))
    return out


@pytest.mark.parametrize("case", REGRESSIONS, ids=[c[0] for c in REGRESSIONS])
def test_regressions(oracle, case):
    """ffmpeg creates the hidden filter (the old reading did not see it where
    marked); the mirror reads the graph as ffmpeg does; the validator refuses it."""
    _id, text, hidden, old_missed = case
    result = oracle.ask(text)
    mirror = fg.parse(text)
    assert not differences(text, mirror, result)
    if hidden is not None:
        created = {f[0] for f in result["filters"]} | set(result["nosuch"]) | {
            s[0].split("_")[1] for s in result["settings"] if s[0].startswith("Parsed_")}
        assert hidden in created, result
        assert hidden in {f.name for f in mirror.filters}
    if old_missed:
        names = {name for name, _ in _old_split(text)}
        assert names <= ffmpeg_filters.ALLOWED_FILTERS | {"sws_flags"} and hidden not in names, names
    with pytest.raises(ValueError):
        o.filtergraph(text)
    oracle.clear_files()  # metadata=file= did write


def test_sws_flags_reach_every_scale(oracle):
    """ffmpeg 5.1 appends the sws_flags text to each scale's options: the
    mirror sees the options it injects (and the validator allows only flags)."""
    text = "sws_flags=bicubic:h=99;scale=32:16,scale=w=8:h=8:flags=area"
    mirror = fg.parse(text)
    assert [f.value_of("h") for f in mirror.filters] == ["99", "8"]
    assert not differences(text, mirror, oracle.ask(text))
    with pytest.raises(ValueError, match="sws_flags"):
        o.filtergraph(text)
    o.filtergraph("sws_flags=bicubic+accurate_rnd;scale=32:16")


def test_positional_tables_match_ffmpeg(oracle):
    """Each POSITIONAL table names what ffmpeg sets for unnamed values."""
    samples = {"scale": "32:16:bicubic", "pad": "64:64:0:0:red", "crop": "16:16:0:0",
               "fps": "25:0", "framerate": "50:101:202:8.2", "apad": "4096:100",
               "tpad": "1:2:add:clone", "asetrate": "44100", "aresample": "48000", "atempo": "2", "tinterlace":
               "merge", "adelay": "100|200:1", "tile": "2x2:4:0:0:black",
               "asetnsamples": "512:0", "minterpolate": "25:dup", "scale2ref": "32:16",
               "split": "3", "asplit": "2", "select": "eq(n\\,0):2", "aselect": "1:2",
               "concat": "2:1:1:1", "amix": "3:first:2:1 2 3:0", "hstack": "3:1",
               "vstack": "2:0", "amerge": "4"}
    assert set(samples) == set(fg.POSITIONAL)
    for name, args in samples.items():
        text = f"{name}={args}"
        mirror = fg.parse(text)
        result = oracle.ask(text)
        assert result["ret"] >= 0, (text, result["log"])
        assert [(k, v) for _, k, v in result["settings"]] == \
            [(opt.name, opt.value) for opt in mirror.filters[0].options], text


def test_allowed_filters_take_no_file_options():
    """No allowed filter has an option naming a file, URL, font or plugin
    (so positional values of allowed filters cannot reach one), and the
    validator's forbidden-key pattern refuses no real option of theirs."""
    bad = {}
    for name in sorted(ffmpeg_filters.ALLOWED_FILTERS):
        out = subprocess.run([FFMPEG, "-hide_banner", "-h", f"filter={name}"],
                             capture_output=True, text=True, timeout=30).stdout
        assert "Unknown filter" not in out, name
        options = re.findall(r"^   (\S+)\s+<", out, re.M)
        hits = [opt for opt in options if ffmpeg_filters._FILE_KEY_RX.search(opt)]
        if hits:
            bad[name] = hits
    assert bad == {}


def _cli_settings(lines):
    """Settings of the graph's own filters (``Parsed_*`` or ``name@id``), not the
    command line's buffers, sinks, inputs and conversions."""
    found, _, _ = digest_log(lines)
    return [s for s in found if s[0].startswith("Parsed_") and s[0] != "Parsed_nullsrc_0"
            or "@" in s[0]]


def test_cli_agrees_with_library(oracle):
    """The ffmpeg command line (-filter_complex, and -vf) logs the same filter
    settings as the in-process oracle (ffmpeg 5.1 gives -vf graphs no
    scale_sws_opts of its own: scale logs flags:'')."""
    import random
    rng = random.Random(20261205)
    texts = []
    while len(texts) < CLI_GRAPHS:
        names = rng.sample(ALLOWED_POOL, 3)
        text = ",".join(n + ("=" + ":".join(rng.sample(OPTION_ATOMS, 2))
                             if rng.random() < 0.7 else "") for n in names)
        if rng.random() < 0.3:
            text = "sws_flags=" + rng.choice(SWS_VALUES) + ";" + text
        if rng.random() < 0.5:
            at = rng.randrange(len(text) + 1)
            text = text[:at] + rng.choice(TRICKY) + text[at:]
        if "\n" not in text:  # the CLI's log is read line by line
            texts.append(text)
    mismatches = []
    with tempfile.TemporaryDirectory() as cwd:
        for i, text in enumerate(texts):
            vf = i % 4 == 3
            if vf:
                argv = [FFMPEG, "-hide_banner", "-nostdin", "-v", "debug", "-f", "lavfi",
                        "-i", "nullsrc=s=32x32:d=0.04", "-vf", text, "-f", "null", "-"]
            else:
                argv = [FFMPEG, "-hide_banner", "-nostdin", "-v", "debug",
                        "-filter_complex", text, "-f", "null", "-"]
            STATS.cli += 1
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env={},
                                      timeout=ORACLE_TIMEOUT_S * 2)
            except subprocess.TimeoutExpired:  # hung: the library must hang too
                if not oracle.ask(text).get("hung"):
                    mismatches.append((text, "cli hung, library did not"))
                continue
            if proc.returncode < 0:  # crashed: the oracle must crash too
                if not oracle.ask(text)["crashed"]:
                    mismatches.append((text, "cli crashed, library did not"))
                continue
            cli = _cli_settings([l + "\n" for l in proc.stderr.splitlines()])
            lib = oracle.ask(text)
            if lib["crashed"]:
                mismatches.append((text, "library crashed, cli did not"))
                continue
            expected = lib["settings"]
            STATS.cli_settings += bool(expected)
            if not (cli == expected or cli == expected * 2):
                mismatches.append((text, cli, expected))
    STATS.differences += len(mismatches)
    assert mismatches == []


if __name__ == "__main__" and sys.argv[1:] == ["--oracle"]:
    _oracle_main()
