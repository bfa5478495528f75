from twisted.trial.unittest import SynchronousTestCase

from nommer.core.errors import InvalidJobSpec
from nommer.core.uri import InvalidURI, MediaURI, as_media_uri, parse_uri, redact_uri


class OriginalMediaUriParsingTests(SynchronousTestCase):
    """The original media-nommer's MediaUriParsingTests, on the new parser."""

    def test_s3_password_with_slash(self):
        """An unencoded '/' in an S3 secret stays in the password."""
        u = parse_uri("s3://SOMEUSER:SOME/PASS@some_bucket/some_dir/some_file.mpg")
        self.assertEqual(
            (u.scheme, u.username, u.password, u.host, u.port, u.key),
            ("s3", "SOMEUSER", "SOME/PASS", "some_bucket", None, "some_dir/some_file.mpg"))
        self.assertEqual(u.path, "/some_dir/some_file.mpg")

    def test_username_only(self):
        """A userinfo without ':' gives a username and no password."""
        u = parse_uri("http://SOMEUSER@some_host.com/some_dir/some_file.mpg")
        self.assertEqual((u.username, u.password, u.host), ("SOMEUSER", None, "some_host.com"))
        self.assertEqual(u.key, "some_dir/some_file.mpg")

    def test_port(self):
        """host:port splits into host and an int port, without credentials."""
        u = parse_uri("http://some-hostname.org:80/some_dir/some_file.mpg")
        self.assertEqual((u.host, u.port, u.username, u.password),
                         ("some-hostname.org", 80, None, None))
        self.assertEqual(u.key, "some_dir/some_file.mpg")

    def test_no_path(self):
        """A URI without a path has the path '/'."""
        self.assertEqual(parse_uri("http://some-hostname.org:80").path, "/")

    def test_no_scheme(self):
        """A URI without 'scheme://' is an InvalidURI, a BADINPUT InvalidJobSpec."""
        with self.assertRaises(InvalidURI) as cm:
            parse_uri("some-hostname.org:80/some_dir/some_file.mpg")
        e = cm.exception
        self.assertIsInstance(e, InvalidJobSpec)
        self.assertIsNone(e.field)
        self.assertEqual(e.error_code, "BADINPUT")
        self.assertIn("no scheme", e.message)


class CredentialRuleTests(SynchronousTestCase):
    """Where the credentials end (module docstring, rule 3)."""

    def test_at_in_path_without_credentials(self):
        """An '@' after the first '/' of a credential-less URI belongs to the path."""
        u = parse_uri("http://host.example/videos/a@b.mpg")
        self.assertEqual((u.username, u.host, u.path), (None, "host.example", "/videos/a@b.mpg"))

    def test_at_in_path_with_port(self):
        """host:port is not mistaken for user:secret when the path holds an '@'."""
        u = parse_uri("http://host:8080/dir/me@example.com.mp4")
        self.assertEqual((u.username, u.host, u.port, u.path),
                         (None, "host", 8080, "/dir/me@example.com.mp4"))

    def test_at_in_file_path(self):
        """file:///a@b is a path, not credentials."""
        u = parse_uri("file:///media/in@put.mp4")
        self.assertEqual((u.host, u.username, u.path), ("", None, "/media/in@put.mp4"))

    def test_slash_secret_and_at_in_key(self):
        """An AWS-style secret with '/' and '+' and a key holding '@' both survive."""
        u = parse_uri("s3://AKIAX:ab/c+d/e@bucket/dir/x@y.mp4")
        self.assertEqual((u.username, u.password, u.host, u.key),
                         ("AKIAX", "ab/c+d/e", "bucket", "dir/x@y.mp4"))

    def test_at_in_password_rfc_style(self):
        """With the '@'s before the first '/', the last one ends the credentials."""
        u = parse_uri("http://user:p@ss@host/x")
        self.assertEqual((u.username, u.password, u.host), ("user", "p@ss", "host"))

    def test_percent_encoded_credentials(self):
        """Credentials are percent-decoded; a literal '+' stays '+'."""
        u = parse_uri("s3://KEY%3A1:SOME%2FPASS+x%40y@bucket/k")
        self.assertEqual((u.username, u.password, u.host), ("KEY:1", "SOME/PASS+x@y", "bucket"))

    def test_empty_password(self):
        """'user:@host' has an empty (not missing) password."""
        self.assertEqual(parse_uri("http://user:@host/x").password, "")


class PartsTests(SynchronousTestCase):
    """Path decoding, query, port and scheme handling."""

    def test_path_percent_decoded(self):
        """The path is percent-decoded; raw_path keeps the original spelling."""
        u = parse_uri("file:///srv/My%20Video%3F.mp4")
        self.assertEqual(u.path, "/srv/My Video?.mp4")
        self.assertEqual(u.raw_path, "/srv/My%20Video%3F.mp4")

    def test_query_separated_fragment_dropped(self):
        """The query is set apart undecoded and the fragment dropped."""
        u = parse_uri("https://h/a/b.mp4?x=1&y=%20#frag")
        self.assertEqual((u.path, u.query), ("/a/b.mp4", "x=1&y=%20"))

    def test_url_without_userinfo(self):
        """url_without_userinfo drops the credentials and keeps the encoded path and query."""
        u = parse_uri("https://u:secret@h:8443/a%2Fb.mp4?x=1")
        self.assertEqual(u.url_without_userinfo(), "https://h:8443/a%2Fb.mp4?x=1")

    def test_scheme_lowercased(self):
        """The scheme is case-insensitive and stored lower-case."""
        self.assertEqual(parse_uri("HTTP://h/x").scheme, "http")

    def test_ipv6_host(self):
        """An IPv6 literal keeps its colons; the port after ']' is split off."""
        u = parse_uri("http://[::1]:8080/x@y")
        self.assertEqual((u.host, u.port, u.username, u.netloc), ("::1", 8080, None, "[::1]:8080"))

    def test_bad_port(self):
        """A port that is not a number in 0..65535 is refused."""
        for uri in ("http://h:abc/x", "http://h:70000/x", "http://a:b:c/x"):
            self.assertRaises(InvalidURI, parse_uri, uri)

    def test_control_characters_refused(self):
        """Control characters and a decoded NUL are refused."""
        for uri in ("http://h/x\r\nHost: evil", "file:///a%00b", "http://h/\x7f"):
            self.assertRaises(InvalidURI, parse_uri, uri)

    def test_not_a_string(self):
        """Non-strings and the empty string are InvalidURI, not TypeError."""
        for value in (None, 42, b"file:///x", ""):
            self.assertRaises(InvalidURI, parse_uri, value)

    def test_bad_utf8_in_path(self):
        """Percent-encoded bytes that are not UTF-8 are refused."""
        self.assertRaises(InvalidURI, parse_uri, "file:///a%ff")

    def test_as_media_uri_sets_field(self):
        """as_media_uri attributes a parse error to the given job field."""
        with self.assertRaises(InvalidURI) as cm:
            as_media_uri("nope", "source_path")
        self.assertEqual(cm.exception.field, "source_path")
        self.assertTrue(cm.exception.message.startswith("source_path: "))

    def test_mediauri_passes_through(self):
        """A MediaURI given to parse_uri is returned as is."""
        u = parse_uri("file:///x")
        self.assertIs(parse_uri(u), u)

    def test_hand_built_mediauri_url(self):
        """A MediaURI built without raw_path still renders its (encoded) path."""
        u = MediaURI(scheme="http", host="h", path="/a b.mp4")
        self.assertEqual(u.url_without_userinfo(), "http://h/a%20b.mp4")


class RedactionTests(SynchronousTestCase):
    """redact_uri hides secrets and never raises."""

    def test_password_masked_username_kept(self):
        """The password becomes *** and the (access key id) username stays."""
        self.assertEqual(redact_uri("s3://AKIAX:SOME/PASS@bucket/dir/f.mpg"),
                         "s3://AKIAX:***@bucket/dir/f.mpg")

    def test_username_only_kept(self):
        """A username-only URI is shown unchanged."""
        self.assertEqual(redact_uri("s3://AKIAX@bucket/k"), "s3://AKIAX@bucket/k")

    def test_no_credentials_unchanged(self):
        """A URI without secrets is shown as written (fragment aside)."""
        uri = "http://host:8080/dir/me@example.com.mp4?a=1"
        self.assertEqual(redact_uri(uri), uri)

    def test_presigned_query_masked(self):
        """Signature, credential and token query parameters are masked, others kept."""
        shown = redact_uri("https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA%2F1"
                           "&X-Amz-Signature=deadbeef&X-Amz-Security-Token=tok&sig=s&X-Amz-Expires=60")
        self.assertNotIn("deadbeef", shown)
        self.assertNotIn("=tok", shown)
        self.assertNotIn("sig=s", shown)
        self.assertNotIn("AKIA", shown)
        self.assertIn("X-Amz-Credential=***", shown)
        self.assertIn("X-Amz-Expires=60", shown)

    def test_secret_query_parameters_masked_any_case(self):
        """key, token, signature, password, secret, access_token, api_key... are masked,
        whatever their case or percent-encoding, with & or ; between parameters."""
        names = ["key", "token", "signature", "X-Amz-Signature", "X-Amz-Credential",
                 "X-Amz-Security-Token", "sig", "password", "secret", "access_token", "api_key",
                 "KEY", "Access_Token", "%6Bey", "x-amz-signature"]
        for i, name in enumerate(names):
            for sep in ("&", ";"):
                uri = f"https://h/v.mp4?a=1{sep}{name}=SECRET{i}x{sep}b=2"
                shown = redact_uri(uri)
                self.assertNotIn(f"SECRET{i}x", shown, uri)
                self.assertIn(f"{name}=***", shown)
                self.assertIn("a=1", shown)
                self.assertIn("b=2", shown)
        # A parameter merely containing a secret word is kept.
        self.assertIn("monkey=1", redact_uri("https://h/v?monkey=1"))

    def test_mediauri_repr_and_str_redacted(self):
        """repr() and str() of a MediaURI never show the password."""
        u = parse_uri("s3://AKIAX:SOME%2FSECRET@bucket/k")
        for text in (repr(u), str(u), redact_uri(u)):
            self.assertNotIn("SECRET", text)
            self.assertIn("AKIAX", text)

    def test_schemeless_redacted(self):
        """Even without a scheme, credentials are masked (also in the error message)."""
        self.assertNotIn("SEC", redact_uri("KEY:SEC/RET@bucket/x"))
        with self.assertRaises(InvalidURI) as cm:
            parse_uri("KEY:SEC/RET@bucket/x")
        self.assertNotIn("SEC", cm.exception.message)

    def test_invalid_uri_message_redacted(self):
        """The message of a parse error (bad port) does not show the password."""
        with self.assertRaises(InvalidURI) as cm:
            parse_uri("http://u:hunter2@h:port/x")
        self.assertNotIn("hunter2", cm.exception.message)

    def test_never_raises(self):
        """Odd inputs give a string, not an exception."""
        for value in (None, 3, "", "::::", "http://[::1", "a\x00b://x:y@z"):
            self.assertIsInstance(redact_uri(value), str)
        self.assertNotIn("y@z", redact_uri("http://x:y@z\x00/"))


class RefusedHostTests(SynchronousTestCase):
    """refused_host_reason: IP literals of non-public ranges, unless allowed."""

    def test_private_literals_refused_with_the_setting_named(self):
        from nommer.core.uri import refused_host_reason
        for host, words in [("127.0.0.1", "loopback"), ("10.0.0.5", "private"), ("0x7f000001", "loopback"),
                            ("::1", "loopback"), ("100.64.1.1", "carrier-grade"), ("[fc00::1]", "unique-local"),
                            ("224.0.0.1", "multicast"), ("0.0.0.0", "unspecified"),
                            ("255.255.255.255", "broadcast"), ("::ffff:10.0.0.5", "IPv4-mapped")]:
            reason = refused_host_reason(host)
            self.assertIsNotNone(reason, host)
            self.assertIn(words, reason)
            self.assertIn("ALLOWED_PRIVATE_NETWORKS", reason)

    def test_allowed_networks(self):
        import ipaddress
        from nommer.core.uri import refused_host_reason
        allowed = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.1.0.0/16")]
        self.assertIsNone(refused_host_reason("127.0.0.1", allowed))
        self.assertIsNone(refused_host_reason("2130706433", allowed))  # 127.0.0.1 as an integer
        self.assertIsNone(refused_host_reason("10.1.2.3", allowed))
        self.assertIsNotNone(refused_host_reason("10.2.0.1", allowed))
        self.assertIsNone(refused_host_reason("example.internal", allowed))  # names: checked at connect
        self.assertIsNone(refused_host_reason("93.184.216.34"))


class TokenUsernameTests(SynchronousTestCase):
    """http(s): a username alone is a token (sent as basic auth): masked like a password.
    s3: the username is an access key id, kept."""

    def test_http_username_only_masked(self):
        for uri, shown in [("https://ghp_T0KEN@host/x.mp4", "https://***@host/x.mp4"),
                           ("http://T0KEN@host:8080/x?a=1", "http://***@host:8080/x?a=1"),
                           ("HTTPS://T0KEN@host/x", "https://***@host/x"),
                           ("https://T0KEN:@host/x", "https://***:***@host/x")]:
            self.assertEqual(redact_uri(uri), shown)
            self.assertEqual(redact_uri(parse_uri(uri)), shown)
            self.assertNotIn("T0KEN", repr(parse_uri(uri)))

    def test_user_with_password_and_s3_key_id_kept(self):
        self.assertEqual(redact_uri("https://user:pw@host/x"), "https://user:***@host/x")
        self.assertEqual(redact_uri("s3://AKIAX@bucket/k"), "s3://AKIAX@bucket/k")

    def test_more_secret_query_parameters(self):
        for name in ("access-token", "hmac", "HMAC", "x-goog-signature", "sig", "auth_token",
                     "private_token", "x-api-key", "session_token", "oauth_signature", "hdnts"):
            shown = redact_uri(f"https://h/v.mp4?se=2030-01-01&sp=r&{name}=S3CRET&a=1")
            self.assertNotIn("S3CRET", shown, name)
            self.assertIn(f"{name}=***", shown)
            self.assertIn("se=2030-01-01&sp=r", shown)  # SAS expiry and permissions are no secret


class HostSpellingTests(SynchronousTestCase):
    """A host is written plainly: letters, digits, '-', '.', '_' (an IPv6 literal in brackets).
    Percent-encoded, spaced or otherwise odd hosts read differently to different parsers:
    refused, naming the URI, with the reason."""

    def test_odd_hosts_refused(self):
        for uri, words in [("http://%6c%6fcalhost/x", ["percent-encoded", "localhost"]),
                           ("http://ex%41mple.com/x", ["percent-encoded"]),
                           ("http://a%/x", ["percent-encoded"]),
                           ("http://exa mple/x", ["host", "' '"]),
                           ("http://exa\\mple/x", ["host"]),
                           ("http://a<b/x", ["host"]),
                           ("s3://buck%65t/k", ["percent-encoded"]),
                           ("http://bücher.example/x", ["xn--"]),
                           ("http://１２７.０.０.１/x", ["xn--"]),
                           ("https://T0KEN@exa%20mple/x", ["percent-encoded"])]:
            with self.assertRaises(InvalidURI, msg=uri) as cm:
                parse_uri(uri)
            for word in words:
                self.assertIn(word, cm.exception.message, uri)
            self.assertNotIn("T0KEN", cm.exception.message)

    def test_percent_encoded_metadata_address_says_so(self):
        with self.assertRaises(InvalidURI) as cm:
            parse_uri("http://%31%36%39.254.169.254/latest/")
        self.assertIn("link-local", cm.exception.message)

    def test_plain_hosts_accepted(self):
        for uri, host in [("http://some_host.com/x", "some_host.com"), ("https://a-b.c.d./x", "a-b.c.d."),
                          ("https://xn--bcher-kva.example/x", "xn--bcher-kva.example"),
                          ("http://[fe80::1%25eth0]/x", "fe80::1%25eth0"), ("file:///srv/x", ""),
                          ("file://localhost/srv/x", "localhost"), ("s3://my.bucket-1/k", "my.bucket-1"),
                          ("http://10.0.0.1:80/x", "10.0.0.1")]:
            self.assertEqual(parse_uri(uri).host, host)
