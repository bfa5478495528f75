"""Injection attempts against a real feederd: each is refused at submit with
a 400 BADINPUT whose message says why, and nothing is stored.

* options that would make ffmpeg read or write other files or URLs (filters,
  extra inputs, protocols, output muxers, worker-owned flags);
* ``file://`` escapes out of FILE_STORAGE_ROOTS;
* SSRF: ``notify_url`` and http(s) ``source_path`` naming a link-local
  address (169.254.0.0/16, the cloud metadata service; fe80::/10) or another
  non-public one (loopback, private, ...) in any spelling, unless
  ALLOWED_PRIVATE_NETWORKS lists it (this feederd allows 127.0.0.0/8). Host
  *names* are allowed at submit: they are checked when nommer connects
  (tests/core/test_netguard.py, test_storage_http.py, test_notifier.py).

Injections that get past submit and must end in ERROR without effect
(playlists naming local files, a filter argument hiding ``movie=`` in quotes)
are in test_bad_media.py, which has workers.
"""

import os

import pytest

from nommer.core.errors import PermanentJobError
from nommer.core.storage.http import HTTPStorage
from nommer.core.uri import InvalidURI
from tests.badinput.conftest import NOMMER, assert_alive_and_clean, assert_json_error, start_feederd, submit_raw
from tests.workerd.media import settings as media_settings

# (id, pass objects, words the message must hold)
OPTION_INJECTIONS = [
    ("vf-movie", [{"outfile_options": [["vf", "movie=/etc/passwd"], ["f", "mp4"]]}], ["movie"]),
    ("vf-amovie", [{"outfile_options": [["af", "amovie=/etc/passwd"], ["f", "mp4"]]}], ["amovie"]),
    ("filter-complex-movie", [{"outfile_options": [["filter_complex", "movie=/etc/passwd[x];[0:v][x]overlay"],
                                                   ["f", "mp4"]]}], ["movie"]),
    ("movie-after-allowed-filter", [{"outfile_options": [["vf", "scale=640:-2,movie=/etc/passwd"],
                                                         ["f", "mp4"]]}], ["movie"]),
    ("movie-with-label-and-instance", [{"outfile_options": [["vf", "[in]movie@x=/etc/passwd[out]"],
                                                            ["f", "mp4"]]}], ["movie"]),
    ("subtitles", [{"outfile_options": [["vf", "subtitles=/etc/passwd"], ["f", "mp4"]]}], ["subtitles"]),
    ("ass", [{"outfile_options": [["vf", "ass=/etc/x.ass"], ["f", "mp4"]]}], ["ass"]),
    ("drawtext-textfile", [{"outfile_options": [["vf", "drawtext=textfile=/etc/passwd"], ["f", "mp4"]]}],
     ["drawtext"]),
    ("lut3d", [{"outfile_options": [["vf", "lut3d=/etc/x.cube"], ["f", "mp4"]]}], ["lut3d"]),
    ("sendcmd", [{"outfile_options": [["vf", "sendcmd=f=/etc/cmds,scale=640:-2"], ["f", "mp4"]]}],
     ["sendcmd"]),
    ("zmq", [{"outfile_options": [["vf", "zmq"], ["f", "mp4"]]}], ["zmq"]),
    ("frei0r-plugin", [{"outfile_options": [["vf", "frei0r=/tmp/evil.so"], ["f", "mp4"]]}], ["frei0r"]),
    ("file-argument-in-allowed-filter", [{"outfile_options": [["vf", "scale=640:-2:filename=/etc/x"],
                                                              ["f", "mp4"]]}], ["files"]),
    ("filter-per-stream", [{"outfile_options": [["filter:v", "movie=/etc/passwd"], ["f", "mp4"]]}], ["movie"]),
    ("filter-script", [{"outfile_options": [["filter_script", "/etc/passwd"], ["f", "mp4"]]}],
     ["filter_script"]),
    ("filter-complex-script", [{"outfile_options": [["filter_complex_script", "/etc/x"], ["f", "mp4"]]}],
     ["filter_complex_script"]),
    ("extra-input", [{"infile_options": [["i", "/etc/passwd"]], "outfile_options": [["f", "mp4"]]}],
     ["-i is not allowed"]),
    ("extra-input-dashed", [{"outfile_options": [["-i", "/etc/passwd"], ["f", "mp4"]]}], ["-i is not allowed"]),
    ("input-format-concat", [{"infile_options": [["f", "concat"]], "outfile_options": [["f", "mp4"]]}],
     ["concat"]),
    ("input-format-hls", [{"infile_options": [["f", "hls"]], "outfile_options": [["f", "mp4"]]}], ["hls"]),
    ("concat-protocol", [{"outfile_options": [["metadata", "title=concat:/etc/passwd|/etc/shadow"],
                                              ["f", "mp4"]]}], ["URLs and protocols"]),
    ("subfile-protocol", [{"outfile_options": [["metadata", "title=subfile,,start,0,end,0,,:/etc/passwd"],
                                               ["f", "mp4"]]}], ["URLs and protocols"]),
    ("file-protocol-in-value", [{"outfile_options": [["map_metadata", "file:/etc/passwd"], ["f", "mp4"]]}],
     ["URLs and protocols"]),
    ("http-url-in-value", [{"outfile_options": [["metadata", "comment=http://169.254.169.254/"],
                                                ["f", "mp4"]]}], ["URLs and protocols"]),
    ("stream-from-second-input", [{"outfile_options": [["map", "1:v"], ["f", "mp4"]]}], ["input 0"]),
    ("output-tee", [{"outfile_options": [["f", "tee"]]}], ["tee"]),
    ("output-hls", [{"outfile_options": [["f", "hls"]]}], ["hls"]),
    ("output-segment", [{"outfile_options": [["f", "segment"]]}], ["segment"]),
    ("output-image2", [{"outfile_options": [["f", "image2"]]}], ["image2"]),
    ("output-dash", [{"outfile_options": [["f", "dash"]]}], ["dash"]),
    ("hls-segment-filename", [{"outfile_options": [["hls_segment_filename", "/tmp/x%d.ts"], ["f", "mp4"]]}],
     ["not an allowed ffmpeg option"]),
    ("overwrite-y", [{"outfile_options": [["y", None], ["f", "mp4"]]}], ["-y is not allowed"]),
    ("no-overwrite-n", [{"outfile_options": [["n", None], ["f", "mp4"]]}], ["-n is not allowed"]),
    ("passlogfile", [{"outfile_options": [["passlogfile", "/tmp/pwn"], ["f", "mp4"]]}], ["passlogfile"]),
    ("progress-url", [{"outfile_options": [["progress", "/tmp/p"], ["f", "mp4"]]}], ["progress"]),
    ("report", [{"outfile_options": [["report", None], ["f", "mp4"]]}], ["report"]),
    ("vstats-file", [{"outfile_options": [["vstats_file", "/tmp/v"], ["f", "mp4"]]}], ["vstats_file"]),
    ("attach", [{"outfile_options": [["attach", "/etc/passwd"], ["f", "matroska"]]}], ["attach"]),
    ("dump-attachment", [{"infile_options": [["dump_attachment:t:0", "/tmp/x"]], "outfile_options": [["f", "mp4"]]}],
     ["dump_attachment"]),
    ("x264-stats-file", [{"outfile_options": [["x264-params", "stats=/tmp/x264.log"], ["f", "mp4"]]}],
     ["stats"]),
    ("x264opts-dump-yuv", [{"outfile_options": [["x264opts", "dump-yuv=/tmp/y.yuv"], ["f", "mp4"]]}],
     ["dump-yuv"]),
    ("preset-file", [{"outfile_options": [["fpre", "/etc/passwd"], ["f", "mp4"]]}], ["preset file"]),
    ("protocol-whitelist", [{"infile_options": [["protocol_whitelist", "file,http,tcp"]],
                             "outfile_options": [["f", "mp4"]]}], ["protocol_whitelist"]),
    ("loglevel", [{"outfile_options": [["loglevel", "quiet"], ["f", "mp4"]]}], ["loglevel"]),
    ("second-output-file", [{"outfile_options": [["f", "mp4"], ["c:v", "libx264 /tmp/second.mp4"]]}],
     ["codec"]),
    ("newline-argv-split", [{"outfile_options": [["metadata", "title=x\n-i\n/etc/passwd"], ["f", "mp4"]]}],
     ["control characters"]),
    ("flag-with-space", [{"outfile_options": [["c:v libx264 -i", "/etc/passwd"], ["f", "mp4"]]}],
     ["option name"]),
    # Filter graphs read as ffmpeg 5.1 reads them: sws_flags ends at the first ';'
    # whatever the quotes, so these hid a filter from the old reading.
    ("sws-flags-quote-hides-metadata",
     [{"outfile_options": [["filter_complex", "sws_flags=bicubic';[0:v]metadata=mode=print:file=/any/path'"],
                           ["f", "mp4"]]}], ["sws_flags"]),
    ("sws-flags-quote-hides-movie",
     [{"outfile_options": [["vf", "sws_flags=bicubic';[in]null,movie=/etc/passwd'"], ["f", "mp4"]]}],
     ["sws_flags"]),
    ("sws-flags-then-sendcmd",
     [{"outfile_options": [["vf", "sws_flags=bicubic;sendcmd=filename=/etc/cmds,scale=640:-2"], ["f", "mp4"]]}],
     ["sendcmd"]),
    ("backslash-inside-quotes-ends-them",
     [{"outfile_options": [["vf", "drawbox='1\\\\',movie=/etc/passwd"], ["f", "mp4"]]}], ["movie"]),
    ("quote-inside-label", [{"outfile_options": [["filter_complex", "[a']']null,movie=x.mkv"], ["f", "mp4"]]}],
     ["label"]),
    ("escaped-filter-name", [{"outfile_options": [["vf", "null,mov\\ie=x.mkv"], ["f", "mp4"]]}],
     ["quotes or escapes"]),
    ("apad-forever", [{"outfile_options": [["af", "apad"], ["f", "mp4"]]}], ["apad"]),
    ("tpad-forever", [{"outfile_options": [["vf", "tpad=stop=-1"], ["f", "mp4"]]}], ["tpad"]),
    # Expression loops: ffmpeg spins in while() for ever (ignoring SIGTERM), and nested
    # taylor()/root() run thousands of times per level: a job holding a worker for hours.
    ("expression-while-forever", [{"outfile_options": [["vf", "select='while(1,1)'"], ["f", "mp4"]]}],
     ["while"]),
    ("expression-while-spaced-escaped",
     [{"outfile_options": [["af", "volume=volume='wh ile (1\\,1)':eval=frame"], ["f", "mp4"]]}], ["while"]),
    ("expression-nested-taylor",
     [{"outfile_options": [["vf", "setpts=taylor(taylor(taylor(0\\,1)\\,1)\\,1)"], ["f", "mp4"]]}],
     ["taylor"]),
    # Sample rates past -ar's bound through filters: gigabytes of output per second of sound.
    ("aresample-huge-rate", [{"outfile_options": [["af", "aresample=2000000000"], ["f", "mp4"]]}],
     ["aresample", "sample_rate"]),
    ("aresample-osr-expression", [{"outfile_options": [["af", "aresample=osr=768000*2600"], ["f", "mp4"]]}],
     ["aresample", "out_sample_rate"]),
    ("aformat-huge-rate", [{"outfile_options": [["af", "aformat=r=44100|0x77359400"], ["f", "mp4"]]}],
     ["aformat", "sample_rates"]),
    # -re paces reading by the input's timestamps: shifted a day on, ffmpeg sleeps for a day.
    ("re-with-itsoffset", [{"infile_options": [["re", None], ["itsoffset", "999999999"]],
                            "outfile_options": [["f", "mp4"]]}], ["-re", "itsoffset"]),
    ("re-with-negative-seek", [{"infile_options": [["ss", "-99999"], ["re", None]],
                                "outfile_options": [["f", "mp4"]]}], ["-re", "-ss"]),
    ("expression-root-in-enable",
     [{"outfile_options": [["vf", "hflip=enable='root(root(t-1,9),9)'"], ["f", "mp4"]]}], ["root"]),
]


def _escapes(root):
    """(id, field, uri, words) for file:// URIs that leave the root."""
    return [
        ("etc-passwd", "source_path", "file:///etc/passwd", ["outside the allowed"]),
        ("dotdot", "source_path", f"file://{root}/../../../../etc/passwd", ["outside the allowed"]),
        ("encoded-dotdot", "source_path", f"file://{root}/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
         ["outside the allowed"]),
        ("encoded-slashes", "source_path", f"file://{root}/..%2f..%2f..%2fetc%2fpasswd",
         ["outside the allowed"]),
        ("other-host", "source_path", f"file://otherhost{root}/in.mp4", ["host"]),
        ("localhost-outside", "source_path", "file://localhost/etc/passwd", ["outside the allowed"]),
        ("encoded-host", "source_path", "file://%2Fetc%2Fpasswd/x", ["host"]),
        ("four-slashes", "source_path", "file:////etc/passwd", ["outside the allowed"]),
        ("upper-scheme", "source_path", "FILE:///etc/passwd", ["outside the allowed"]),
        ("query-dotdot", "source_path", f"file://{root}/in.mp4?../../etc/passwd", ["query"]),
        ("user-and-port", "source_path", f"file://me:pw@localhost:22{root}/in.mp4", []),
        ("symlink-file-out", "source_path", f"file://{root}/passwd-link.mp4", ["outside the allowed"]),
        ("symlink-dir-out", "source_path", f"file://{root}/etc-link/passwd", ["outside the allowed"]),
        ("symlink-chain-out", "source_path", f"file://{root}/chain-link.mp4", ["outside the allowed"]),
        ("no-slashes", "source_path", f"file:{root}/in.mp4", ["no scheme"]),
        ("dest-outside", "dest_path", "file:///etc/cron.d/x.mp4", ["outside the allowed"]),
        ("dest-dotdot", "dest_path", f"file://{root}/../x.mp4", ["outside the allowed"]),
        ("dest-symlink-dir-out", "dest_path", f"file://{root}/tmp-link/x.mp4", ["outside the allowed"]),
        ("dest-is-dir", "dest_path", f"file://{root}/..", ["does not name a file"]),
        ("dest-dev-null-escape", "dest_path", "file:///dev/null", ["outside the allowed"]),
    ]


#: Spellings of link-local / metadata addresses a resolver or HTTP client accepts.
LINK_LOCAL_HOSTS = [
    ("metadata-dotted", "169.254.169.254"),
    ("metadata-hex", "0xa9fea9fe"),
    ("metadata-hex-upper", "0XA9FEA9FE"),
    ("metadata-decimal", "2852039166"),
    ("metadata-octal", "0251.0376.0251.0376"),
    ("metadata-dotted-hex", "0xa9.0xfe.0xa9.0xfe"),
    ("metadata-short-form", "169.254.43518"),
    ("metadata-trailing-dot", "169.254.169.254."),
    ("metadata-percent-encoded", "%31%36%39.254.169.254"),
    ("link-local-other", "169.254.1.1"),
    ("ipv6-link-local", "[fe80::1]"),
    ("ipv6-link-local-upper", "[FE80::a:b]"),
    ("ipv6-link-local-zone", "[fe80::1%25eth0]"),
    ("ipv4-mapped", "[::ffff:169.254.169.254]"),
    ("ipv4-mapped-hex", "[::ffff:a9fe:a9fe]"),
    ("ipv4-compatible", "[::169.254.169.254]"),
    ("6to4", "[2002:a9fe:a9fe::1]"),
    ("nat64", "[64:ff9b::a9fe:a9fe]"),
    ("aws-ipv6-metadata", "[fd00:ec2::254]"),
]
SSRF_CASES = [(f"{field}-{hid}", field, host) for hid, host in LINK_LOCAL_HOSTS
              for field in ("notify_url", "source_path")]


@pytest.fixture(scope="module")
def daemon(root):
    """A feederd with no worker fleet (every case is decided at submit), and
    symlinks inside its root that point out of it."""
    os.symlink("/etc/passwd", os.path.join(root, "passwd-link.mp4"))
    os.symlink("/etc", os.path.join(root, "etc-link"))
    os.symlink("/tmp", os.path.join(root, "tmp-link"))
    os.symlink(os.path.join(root, "passwd-link.mp4"), os.path.join(root, "chain-link.mp4"))
    feederd = start_feederd(root, FLEET_BACKEND="none")
    yield feederd
    feederd.stop()


def body(root, **changes):
    b = {"source_path": f"file://{root}/in.mp4", "dest_path": f"file://{root}/out.mp4", "notify_url": None,
         "job_options": {"nommer": NOMMER, "options": [{"outfile_options": [["c:v", "libx264"], ["f", "mp4"]]}]}}
    b.update(changes)
    return b


def test_counts():
    """At least 40 option injections, 20 file escapes and 19 address spellings x 2 fields."""
    assert len(OPTION_INJECTIONS) >= 40
    assert len(_escapes("/r")) >= 20
    assert len(SSRF_CASES) >= 38


@pytest.mark.parametrize("case", OPTION_INJECTIONS, ids=[c[0] for c in OPTION_INJECTIONS])
def test_option_injection_refused(daemon, root, case):
    """An option that reaches another file, URL or the worker's own flags is refused at submit."""
    _id, passes, words = case
    resp = submit_raw(daemon.port, body(root, job_options={"nommer": NOMMER, "options": passes}))
    payload = assert_json_error(resp, 400, "BADINPUT", words)
    assert "job_options.options[0]" in payload["message"], payload


@pytest.mark.parametrize("index", range(20), ids=[c[0] for c in _escapes("/r")])
def test_file_uri_escape_refused(daemon, root, index):
    """A file:// URI leading out of FILE_STORAGE_ROOTS (.., %2e%2e, other hosts, symlinks) is refused at submit."""
    _id, field, uri, words = _escapes(root)[index]
    resp = submit_raw(daemon.port, body(root, **{field: uri}))
    payload = assert_json_error(resp, 400, "BADINPUT", words)
    assert payload["message"].startswith(field), payload


@pytest.mark.parametrize("case", SSRF_CASES, ids=[c[0] for c in SSRF_CASES])
def test_link_local_address_refused(daemon, root, case):
    """notify_url / http source naming a link-local or metadata address, in any spelling, is refused at submit."""
    _id, field, host = case
    url = f"http://{host}/latest/meta-data/iam/security-credentials/"
    resp = submit_raw(daemon.port, body(root, **{field: url}))
    payload = assert_json_error(resp, 400, "BADINPUT", [field, "link-local"])
    assert payload["message"].startswith(field), payload


@pytest.mark.parametrize("url", ["https://169.254.169.254:443/x", "http://user:pw@169.254.169.254/x",
                                 "http://169.254.169.254:80/x#frag", "HTTP://169.254.169.254/x"])
def test_link_local_with_port_credentials_or_case_refused(daemon, root, url):
    """Ports, credentials, fragments and scheme case do not hide a metadata address."""
    for field in ("notify_url", "source_path"):
        resp = submit_raw(daemon.port, body(root, **{field: url}))
        assert_json_error(resp, 400, "BADINPUT", ["link-local"])


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://metadata.example/hook",
                                 "http://169.255.0.1/hook", "https://93.184.216.34/hook"])
def test_other_addresses_and_hostnames_still_accepted(daemon, root, url):
    """Public and named hosts, and loopback when ALLOWED_PRIVATE_NETWORKS lists it (the test feederd
    allows 127.0.0.0/8), are accepted: names are resolved when connecting, not at submit."""
    resp = submit_raw(daemon.port, body(root, notify_url=url))
    assert resp.status == 200, resp
    resp = submit_raw(daemon.port, body(root, source_path=url.replace("/hook", "/in.mp4")))
    assert resp.status == 200, resp


@pytest.mark.parametrize("url,words", [
    ("http://[::1]:9/hook", "loopback"), ("https://10.0.0.1/hook", "private"),
    ("http://0x0a000001/hook", "private"), ("http://100.64.0.1/hook", "carrier-grade"),
    ("http://[fd12::1]/hook", "unique-local"), ("http://0.0.0.0:9/hook", "unspecified"),
    ("http://[::ffff:192.168.0.1]/hook", "private")])
def test_non_public_literals_refused(daemon, root, url, words):
    """Other loopback, private, shared, unique-local and unspecified literals are BADINPUT at submit,
    naming the field, the kind of address and the setting that allows it."""
    for field, value in (("notify_url", url), ("source_path", url.replace("/hook", "/in.mp4"))):
        resp = submit_raw(daemon.port, body(root, **{field: value}))
        payload = assert_json_error(resp, 400, "BADINPUT", [field, words, "ALLOWED_PRIVATE_NETWORKS"])
        assert payload["message"].startswith(field), payload


#: Hosts that read differently to different parsers (percent-encoded, spaced, odd characters,
#: not ASCII): refused at submit rather than ending in an internal error or retries on a worker.
ODD_HOSTS = [
    ("percent-encoded-localhost", "%6c%6fcalhost", ["percent-encoded", "localhost"]),
    ("percent-encoded-letter", "ex%41mple.com", ["percent-encoded"]),
    ("lone-percent", "a%", ["percent-encoded"]),
    ("encoded-space", "exa%20mple", ["percent-encoded"]),
    ("space", "exa mple", ["host"]),
    ("backslash", "exa\\mple.com", ["host"]),
    ("angle", "a<b", ["host"]),
    ("fullwidth-loopback", "\uff11\uff12\uff17.\uff10.\uff10.\uff11", ["xn--"]),
    ("unicode-name", "b\u00fccher.example", ["xn--"]),
    ("empty", "", ["host"]),
    ("empty-with-port", ":80", ["host"]),
]


@pytest.mark.parametrize("case", ODD_HOSTS, ids=[c[0] for c in ODD_HOSTS])
def test_odd_hosts_refused(daemon, root, case):
    """A malformed or percent-encoded host is a 400 BADINPUT naming the field, for notify_url and
    an http(s) source alike."""
    _id, host, words = case
    for field, url in (("notify_url", f"http://{host}/hook"), ("source_path", f"https://{host}/in.mp4")):
        resp = submit_raw(daemon.port, body(root, **{field: url}))
        payload = assert_json_error(resp, 400, "BADINPUT", [field] + (words if field == "source_path" else []))
        assert payload["message"].startswith(field), payload


def test_refusals_stored_nothing(daemon, root):
    """Only the accepted control submissions were stored (8); no refused one became a job."""
    jobs, _ = daemon.client.list(limit=500)
    assert len(jobs) == 8, [j["source_path"] for j in jobs]
    for job in jobs:
        for uri in (job["source_path"], job["notify_url"] or ""):
            assert "169.254" not in uri and "fe80" not in uri.lower() and "10.0.0.1" not in uri, job


def test_worker_recheck_refuses_link_local_source():
    """The worker re-checks at download time: a stored job with a metadata-address source ends in ERROR, not a GET."""
    storage = HTTPStorage(media_settings(), None)
    with pytest.raises(InvalidURI):
        storage.check("http://0xa9fea9fe/latest/meta-data/", False)
    with pytest.raises(PermanentJobError) as info:
        storage._check_at_use("http://[::ffff:169.254.169.254]/x", for_write=False)
    assert "link-local" in info.value.message


def test_daemon_alive_and_log_clean(daemon):
    """After every injection attempt, GET /health is 200 and the log holds no traceback."""
    assert_alive_and_clean(daemon)
