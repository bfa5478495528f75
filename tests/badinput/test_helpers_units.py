"""Unit checks of the small helpers the bad-input fixes added: the address
classifier (link-local and every other non-public range), the URI character
and bracket rules, the playlist sniffer and the
request-body shape check."""

import pytest

from nommer.core.errors import InvalidJobSpec
from nommer.core.uri import InvalidURI, parse_uri, redact_uri, refused_host_reason
from nommer.feederd.api import MAX_JSON_DEPTH, _check_json_shape
from nommer.workerd.probe import playlist_kind


@pytest.mark.parametrize("host", [
    "169.254.169.254", "0xa9fea9fe", "2852039166", "0251.0376.0251.0376", "169.254.43518",
    "0xa9.0xfe.0xa9.0xfe", "169.254.169.254.", "%31%36%39.254.169.254", "169.254.0.1",
    "fe80::1", "FE80::1%25eth0", "febf::1", "::ffff:169.254.169.254", "::ffff:a9fe:a9fe",
    "::169.254.169.254", "2002:a9fe:a9fe::", "64:ff9b::a9fe:a9fe", "fd00:ec2::254",
])
def test_link_local_spellings_refused(host):
    """Every spelling of a link-local or metadata address is refused, with the reason."""
    assert "link-local" in refused_host_reason(host)


@pytest.mark.parametrize("host", [
    "169.255.0.1", "169.253.255.255", "93.184.216.34", "2606:4700::1", "example.com",
    "metadata.google.internal", "1.2.3.4.5", "08.1.1.1", "0x", "", "1e3", "+1", "1_000",
])
def test_other_hosts_allowed(host):
    """Public neighbours of the link-local range, names and non-literals are not refused
    (names are checked when nommer connects: nommer.core.netguard)."""
    assert refused_host_reason(host) is None


@pytest.mark.parametrize("host,words", [
    ("127.0.0.1", "loopback"), ("0x7f000001", "loopback"), ("2130706433", "loopback"), ("::1", "loopback"),
    ("10.0.0.1", "private"), ("012.0.0.1", "private"), ("100.64.0.1", "carrier-grade"),
    ("fec0::1", "site-local"), ("fd12::1", "unique-local"), ("224.0.0.1", "multicast"), ("0", "unspecified"),
])
def test_non_public_literals_refused_unless_allowed(host, words):
    """Loopback, private, shared, site/unique-local, multicast and unspecified literals are refused
    in any spelling, naming the setting; ALLOWED_PRIVATE_NETWORKS lets them through."""
    import ipaddress
    reason = refused_host_reason(host)
    assert reason is not None and words in reason and "ALLOWED_PRIVATE_NETWORKS" in reason
    everything = [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
    assert refused_host_reason(host, everything) is None


@pytest.mark.parametrize("uri", [
    "file:///a/\u202eb.mp4", "file:///a/%E2%80%AEb.mp4", "file:///a/\ud800", "file:///a/\x85b",
    "http://[::1/x", "http://[zz]/x", "http://[]/x", "http://a:b:80/x", "http://[::1]x/",
])
def test_bad_characters_and_brackets_refused(uri):
    """Bidi controls (written or encoded), surrogates, C1 controls and malformed brackets are InvalidURI."""
    with pytest.raises(InvalidURI):
        parse_uri(uri)
    assert isinstance(redact_uri(uri), str)


def test_ipv6_literals_still_parse():
    """A bracketed IPv6 literal (with a port or a zone id) still parses."""
    assert parse_uri("http://[::1]:8080/x").host == "::1"
    assert parse_uri("http://[fe80::1%25eth0]/x").host == "fe80::1%25eth0"


@pytest.mark.parametrize("head,kind", [
    (b"#EXTM3U\n#EXTINF:2,\nx.ts\n", "hls"),
    (b"\xef\xbb\xbf\r\n #EXTM3U\n", "hls"),
    (b"ID3\x04\x00\x10\x00\x00\x00\x02ab" + b"\x00" * 10 + b"#EXTM3U\n", "hls"),
    (b"ffconcat version 1.0\nfile a.ts\n", "concat"),
    (b'<?xml version="1.0"?><MPD profiles="urn:mpeg:dash:profile:isoff-live:2011">', "dash"),
    (b"\x00\x00\x00\x20ftypisom", None), (b"", None), (b"<html><body>MPD</body></html>", None),
])
def test_playlist_sniffer(head, kind):
    """Playlists are recognised as ffmpeg would probe them (after a BOM, blanks and ID3 tags); media is not."""
    assert playlist_kind(head) == kind


def test_body_shape_limits():
    """A body at the depth limit passes; one level more, or a lone surrogate anywhere, is BADINPUT."""
    deep = []
    for _ in range(MAX_JSON_DEPTH - 1):
        deep = [deep]
    _check_json_shape(deep)
    with pytest.raises(InvalidJobSpec, match="nests deeper"):
        _check_json_shape([deep])
    for bad in ({"a": ["ok", {"b": "\udfff"}]}, {"\ud800": 1}, ["x", "\ud83d"]):
        with pytest.raises(InvalidJobSpec, match="surrogate"):
            _check_json_shape(bad)
    _check_json_shape({"emoji": "\U0001f600", "rtl": "\u202e", "nul": "\x00"})
