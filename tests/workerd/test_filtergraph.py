"""filtergraph.py: the mirror of libavfilter 5.1's graph reading, without ffmpeg.

The cases pin down the C behaviour read in avstring.c / graphparser.c /
avfilter.c / opt.c (test_filtergraph_differential.py checks the same against
libavfilter itself); the property tests fuzz the parser alone.
"""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nommer.workerd.nommers import filtergraph as fg

EXAMPLES = int(os.environ.get("NOMMER_FUZZ_EXAMPLES", "2000"))


def tok(text, term):
    token, pos = fg.get_token(text, 0, term)
    return token.text, text[pos:]


class TestGetToken:
    """av_get_token."""

    def test_plain_and_terminator(self):
        assert tok("scale=640", "=,;[") == ("scale", "=640")
        assert tok("  null , x", "=,;[") == ("null", ", x")

    def test_backslash_escapes_anything_even_a_terminator(self):
        assert tok("a\\,b,c", ",") == ("a,b", ",c")
        assert tok("a\\\\b", ",") == ("a\\b", "")
        assert tok("a\\'b", ",") == ("a'b", "")

    def test_quotes_are_verbatim_and_hide_terminators(self):
        assert tok("'a,b\\'x", ",") == ("a,b\\x", "")  # backslash is literal inside quotes
        assert tok("x'a,b'y,z", ",") == ("xa,by", ",z")

    def test_unterminated_quote_runs_to_the_end(self):
        token, pos = fg.get_token("a'b,c", 0, ",")
        assert (token.text, pos, token.unterminated) == ("ab,c", 5, True)

    def test_trailing_whitespace_trimmed_unless_quoted_or_escaped(self):
        assert tok("a  ,", ",") == ("a", ",")
        assert tok("'a  ' ,", ",") == ("a  ", ",")
        assert tok("a\\  ,", ",") == ("a ", ",")

    def test_lone_backslash_at_the_end_is_kept(self):
        token, _ = fg.get_token("ab\\", 0, ",")
        assert (token.text, token.lone_backslash) == ("ab\\", True)


class TestParse:
    """avfilter_graph_parse2's reading."""

    def names(self, text, **kw):
        return [f.name for f in fg.parse(text, **kw).filters]

    def test_sws_flags_end_at_the_first_semicolon_whatever_the_quotes(self):
        graph = fg.parse("sws_flags=bicubic';[0:v]metadata=mode=print:file=/any/path'")
        assert graph.sws_flags == "bicubic'"
        assert [f.name for f in graph.filters] == ["metadata"]
        assert graph.filters[0].options[1].value == "/any/path"
        assert graph.filters[0].inputs == ("0:v",)

    def test_sws_flags_only_at_the_very_start(self):
        assert fg.parse("  sws_flags=area;null").sws_flags == "area"
        assert self.names("null,sws_flags=area;null") == ["null", "sws_flags", "null"]
        assert self.names("[in]sws_flags=a;null") == ["sws_flags", "null"]
        with pytest.raises(fg.FilterGraphError, match="not terminated"):
            fg.parse("sws_flags=bicubic")

    def test_sws_flags_are_appended_to_scale(self):
        graph = fg.parse("sws_flags=area;scale=32:16,scale,scale=flags=lanczos,null")
        assert [f.init_args for f in graph.filters] == [
            "32:16:flags=area", "flags=area", "flags=lanczos", None]

    def test_labels_chains_and_instances(self):
        graph = fg.parse("[0:v] scale@big=640:-2 [a];[a]split[b][c]")
        big, split = graph.filters
        assert (big.name, big.instance, big.inputs, big.outputs) == (
            "scale", "scale@big", ("0:v",), ("a",))
        assert (split.instance, split.inputs, split.outputs) == (
            "Parsed_split_1", ("a",), ("b", "c"))

    def test_instance_split_as_create_filter(self):
        assert fg.parse("scale@").filters[0].name == "scale@"  # '@' last: not split
        long_name = "x" * 29 + "@i"
        assert fg.parse(long_name).filters[0].name == long_name  # '@' past name2[30]
        assert fg.parse("x" * 28 + "@i").filters[0].name == "x" * 28
        assert fg.parse("n" * 40).filters[0].instance == ("Parsed_" + "n" * 40)[:29]

    def test_quoted_and_escaped_names_are_what_ffmpeg_looks_up(self):
        assert self.names("null,mov\\ie=x") == ["null", "movie"]
        assert self.names("null,'movie'=x") == ["null", "movie"]

    def test_parse_errors_of_ffmpeg(self):
        for text in ("", "null,", ",null", "null,,null", "[]null", "[a null", "scale=1]x"):
            with pytest.raises(fg.FilterGraphError):
                fg.parse(text)
        # Names ffmpeg looks up and does not find (an error when the graph is built).
        assert self.names("null]") == ["null]"]
        assert self.names("null x'") == ["null x"]

    def test_options_two_rounds_of_unescaping(self):
        f, = fg.parse("select='eq(n\\,0)':outputs=2").filters
        assert [(o.key, o.name, o.value) for o in f.options] == [
            (None, "expr", "eq(n,0)"), ("outputs", "outputs", "2")]
        f, = fg.parse("scale=w=1\\:h=2").filters  # graph level eats the escape
        assert [(o.key, o.value) for o in f.options] == [("w", "1"), ("h", "2")]
        f, = fg.parse("scale=w=1\\\\:h=2").filters
        assert [(o.key, o.value) for o in f.options] == [("w", "1:h=2")]

    def test_key_needs_key_characters_only(self):
        f, = fg.parse("pan=stereo|c0=FL").filters
        assert [(o.key, o.value) for o in f.options] == [(None, "stereo|c0=FL")]
        f, = fg.parse("drawbox=\\'x\\'=5").filters  # quote before '=': a value
        assert [(o.key, o.value) for o in f.options] == [(None, "x=5")]

    def test_positional_names(self):
        f, = fg.parse("apad=4096:100").filters
        assert [(o.name, o.value) for o in f.options] == [("packet_size", "4096"),
                                                           ("pad_len", "100")]
        assert f.value_of("pad_len") == "100"
        f, = fg.parse("pad=w=10:height=20").filters
        assert (f.value_of("width"), f.value_of("height")) == ("10", "20")
        f, = fg.parse("scale=10:w=20:30").filters  # after a named option: unknown
        assert [o.name for o in f.options] == ["w", "w", None]


class TestStrict:
    """What reads two ways is refused."""

    @pytest.mark.parametrize("text", [
        "sws_flags=bicubic';[0:v]metadata=mode=print:file=/any/path'",
        "sws_flags=bicubic:h=99;scale",
        "sws_flags=nosuchflag;scale",
        "['0:v']null", "[a\\]b]null", "[a b]null", "[a']']null",
        "'null'", "nu\\ll", "scale='640", "scale=640\\", "scale=w=1:2",
        "select=\\'eq(n\\,0)",
    ])
    def test_refused(self, text):
        with pytest.raises(fg.FilterGraphError):
            fg.parse(text, strict=True)

    @pytest.mark.parametrize("text", [
        "sws_flags=bicubic+accurate_rnd;[0:v]scale=640:-2",
        "yadif,scale='640:trunc(ow/a/2)*2'", "[in]scale=640:-2,pad=w=1\\,2[x];[x]null[out]",
        "select='eq(pict_type\\,I)'", "pan=stereo|c0=FL|c1=FR", "scale@a_1=w=640:h=-2",
        " [0:v] null , hflip ; [0:a] anull ",
    ])
    def test_accepted(self, text):
        fg.parse(text, strict=True)


def test_value_readers():
    """number, rate and duration read ffmpeg's plain spellings, None otherwise."""
    assert fg.number(" 12 ") == 12 and fg.number("-1.5e2") == -150
    assert fg.number("iw/2") is None
    assert fg.rate("30000/1001") == pytest.approx(29.97, abs=0.01)
    assert fg.rate("ntsc") == pytest.approx(29.97, abs=0.01)
    assert fg.rate("source_fps") is None and fg.rate("1/0") is None
    assert fg.duration("01:02:03.5") == 3723.5
    assert fg.duration("500ms") == 0.5 and fg.duration("-2") == -2
    assert fg.duration("1:00ms") is None and fg.duration("x") is None


# --- the parser alone, fuzzed --------------------------------------------------------

PIECES = ["scale", "null", "movie", "sws_flags=", "=", ",", ";", "[", "]", "'", "\\", ":",
          " ", "\t", "\n", "@", "a", "0:v", "file=", "x", "640", "'a:b'", "\\'", "\\\\"]
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.one_of(st.text(max_size=80),
                 st.lists(st.sampled_from(PIECES), max_size=30).map("".join)))
def test_parser_raises_only_filtergraph_errors(text):
    """Any text: a Graph or FilterGraphError (a ValueError), never anything else;
    strict accepts a subset of what the mirror accepts, with the same reading."""
    try:
        graph = fg.parse(text)
    except fg.FilterGraphError:
        graph = None
    try:
        strict = fg.parse(text, strict=True)
    except fg.FilterGraphError as e:
        assert isinstance(e, ValueError) and str(e)
        return
    assert graph is not None
    assert [(f.name, f.instance, f.init_args) for f in strict.filters] == \
        [(f.name, f.instance, f.init_args) for f in graph.filters]


@FUZZ
@given(st.lists(st.sampled_from(PIECES), max_size=30).map("".join),
       st.sampled_from(["=,;[", "[],;", "]", ":"]))
def test_get_token_stops_at_a_terminator_or_the_end(text, term):
    """av_get_token never reads past an unquoted, unescaped terminator and
    never yields leading whitespace."""
    token, pos = fg.get_token(text, 0, term)
    assert pos == len(text) or text[pos] in term
    assert not token.text[:1] or token.text[0] not in fg.WHITESPACES or \
        text.lstrip(fg.WHITESPACES)[:1] in ("'", "\\")
