"""The KeyStore contract: mixed into one TestCase per backend.

A backend test case provides:

- ``make_store(clock)``: a fresh store on empty storage, stamping times
  with ``clock`` (a ``task.Clock``); the contract closes it at cleanup.
- ``make_twin(clock)``: another store on the same storage (another
  process, say ``nommer keys revoke`` beside feederd); closed by the contract.
- ``raw_dump()`` (may be async): everything the backend stored, as text
  (the SQLite file and its WAL, every item of the table or domain).
"""

import inspect
import re

from twisted.internet import defer, task

from nommer.core.errors import InvalidJobSpec
from nommer.core.keys import SCOPES, ApiKey, InvalidKeySpec, NoSuchKey
from nommer.core.keys.base import hash_secret
from tests.helpers import ensure

T0 = 1_700_000_000.25

#: The longest a revocation by another store may take to be seen (seconds).
MAX_REVOCATION_DELAY_S = 5.0


class KeyStoreContract:

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.keys = self.make_store(self.clock)
        self.addCleanup(self.keys.close)

    def twin(self):
        other = self.make_twin(self.clock)
        self.addCleanup(other.close)
        return other

    async def raw(self):
        dump = self.raw_dump()
        if inspect.isawaitable(dump):
            dump = await dump
        return dump

    @ensure
    async def test_create_returns_a_secret_that_authenticates(self):
        """create() gives the key and its secret, nmk_<key_id>_<43 urlsafe>; the secret authenticates to that key."""
        key, secret = await self.keys.create("ci-uploader", ["submit", "read"])
        self.assertIsInstance(key, ApiKey)
        self.assertRegex(key.key_id, r"^[0-9a-f]{16}$")
        self.assertRegex(secret, r"^nmk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$")
        self.assertTrue(secret.startswith(f"nmk_{key.key_id}_"))
        self.assertEqual(key, ApiKey(key_id=key.key_id, name="ci-uploader", scopes=frozenset({"submit", "read"}),
                                     created_at=T0, revoked_at=None))
        self.assertEqual(await self.keys.authenticate(secret), key)
        self.assertEqual(await self.twin().authenticate(secret), key)
        self.assertEqual(await self.keys.get(key.key_id), key)

    @ensure
    async def test_default_scopes_and_scope_spellings(self):
        """Default scopes are submit, read, cancel; "admin, READ" as one string is accepted."""
        key, _ = await self.keys.create("default")
        self.assertEqual(key.scopes, frozenset({"submit", "read", "cancel"}))
        key, _ = await self.keys.create("boss", " admin, READ ")
        self.assertEqual(key.scopes, frozenset({"admin", "read"}))
        key, secret = await self.keys.create("all", SCOPES)
        self.assertEqual((await self.keys.authenticate(secret)).scopes, frozenset(SCOPES))

    @ensure
    async def test_wrong_malformed_or_empty_secrets_are_none(self):
        """Another key's random part, truncated, padded, wrong case, wrong type, empty: None, never an error."""
        key, secret = await self.keys.create("k")
        other, other_secret = await self.keys.create("other")
        forged = secret[:4 + 16 + 1] + other_secret[4 + 16 + 1:]
        flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
        bad = [forged, flipped, secret[:-1], secret + "A", " " + secret, secret + "\n", "Bearer " + secret,
               secret.upper(), secret.replace("nmk_", "nmK_"), f"nmk_{'0' * 16}_{'A' * 43}", "", "nmk_",
               key.key_id, hash_secret(secret), None, 42, secret.encode(), ["x"], "nmk_" + "é" * 60]
        for candidate in bad:
            self.assertIsNone(await self.keys.authenticate(candidate), repr(candidate))
        self.assertEqual(await self.keys.authenticate(secret), key)
        self.assertEqual(await self.keys.authenticate(other_secret), other)

    @ensure
    async def test_secret_is_never_stored(self):
        """The stored data holds the key's hash and name but neither the secret nor its random part."""
        _, secret = await self.keys.create("findable-name", ["read"])
        await self.keys.authenticate(secret)
        raw = await self.raw()
        self.assertIn("findable-name", raw)
        self.assertIn(hash_secret(secret), raw)
        self.assertNotIn(secret, raw)
        self.assertNotIn(secret[-43:], raw)
        self.assertNotIn(secret[-20:], raw)

    @ensure
    async def test_listing_shows_no_secret(self):
        """to_dict() of a key has exactly the public fields."""
        key, secret = await self.keys.create("k", ["cancel", "submit"])
        listed = [k.to_dict() for k in await self.keys.list()]
        self.assertEqual(listed, [{"key_id": key.key_id, "name": "k", "scopes": ["cancel", "submit"],
                                   "created_at": T0, "revoked_at": None}])
        self.assertNotIn(secret[-43:], repr(listed) + repr(key))
        self.assertNotIn(hash_secret(secret), repr(listed) + repr(key))

    @ensure
    async def test_revoke(self):
        """A revoked key no longer authenticates and is listed with revoked_at; revoking again keeps that time."""
        key, secret = await self.keys.create("k")
        self.clock.advance(1)
        keep, keep_secret = await self.keys.create("keep")
        self.clock.advance(59)
        revoked = await self.keys.revoke(key.key_id)
        self.assertEqual(revoked, ApiKey(key_id=key.key_id, name="k", scopes=key.scopes, created_at=T0,
                                         revoked_at=T0 + 60))
        self.assertFalse(revoked.active)
        self.assertIsNone(await self.keys.authenticate(secret))
        self.assertEqual(await self.keys.authenticate(keep_secret), keep)
        self.clock.advance(60)
        self.assertEqual(await self.keys.revoke(key.key_id), revoked)
        self.assertEqual(await self.keys.list(), [revoked, keep])
        self.assertEqual(await self.keys.get(key.key_id), revoked)

    @ensure
    async def test_revoke_elsewhere_takes_effect_within_seconds(self):
        """A key revoked through another store (the CLI beside feederd) stops authenticating here
        within MAX_REVOCATION_DELAY_S."""
        key, secret = await self.keys.create("k")
        self.assertEqual(await self.keys.authenticate(secret), key)
        await self.twin().revoke(key.key_id)
        self.clock.advance(MAX_REVOCATION_DELAY_S)
        self.assertIsNone(await self.keys.authenticate(secret))

    @ensure
    async def test_revoke_or_get_unknown_raises_no_such_key(self):
        """revoke() and get() of a key_id never created raise NoSuchKey (404 NOSUCHKEY) naming it."""
        await self.keys.create("k")
        for method in (self.keys.revoke, self.keys.get):
            with self.assertRaises(NoSuchKey) as raised:
                await method("0123456789abcdef")
            self.assertIn("0123456789abcdef", str(raised.exception))
            self.assertEqual((raised.exception.error_code, raised.exception.http_status), ("NOSUCHKEY", 404))

    @ensure
    async def test_any_active(self):
        """False with no key, true with one, false again when all are revoked."""
        self.assertFalse(await self.keys.any_active())
        a, _ = await self.keys.create("a")
        b, _ = await self.keys.create("b")
        self.assertTrue(await self.keys.any_active())
        await self.keys.revoke(a.key_id)
        self.assertTrue(await self.keys.any_active())
        await self.keys.revoke(b.key_id)
        self.assertFalse(await self.keys.any_active())

    @ensure
    async def test_unknown_or_no_scope_is_refused(self):
        """An unknown scope (or none) is InvalidKeySpec, a BADINPUT ValueError naming it and the known ones;
        nothing is stored."""
        for scopes, words in [(["submit", "write"], ["'write'", "submit, read, cancel, admin"]),
                              ("read,superuser,root", ["'root'", "'superuser'"]),
                              ([], ["at least one scope"]), ("", ["at least one scope"]), (" , ", ["at least one"])]:
            with self.assertRaises(InvalidKeySpec) as raised:
                await self.keys.create("k", scopes)
            self.assertIsInstance(raised.exception, ValueError)
            self.assertIsInstance(raised.exception, InvalidJobSpec)
            self.assertEqual((raised.exception.field, raised.exception.error_code), ("scopes", "BADINPUT"))
            for word in words:
                self.assertIn(word, str(raised.exception))
        self.assertEqual(await self.keys.list(), [])

    @ensure
    async def test_bad_names_are_refused(self):
        """An empty, blank, over-long or control-character name is InvalidKeySpec; names are stripped."""
        for name in ["", "   ", "x" * 201, "a\nb", "a\x00b", None]:
            with self.assertRaises(InvalidKeySpec):
                await self.keys.create(name)
        key, _ = await self.keys.create("  ci 'deploy' é  ")
        self.assertEqual(key.name, "ci 'deploy' é")
        self.assertEqual((await self.keys.list())[0].name, "ci 'deploy' é")

    @ensure
    async def test_list_oldest_first_revoked_included(self):
        """list() holds every key, oldest first; empty store -> []."""
        self.assertEqual(await self.keys.list(), [])
        created = []
        for i in range(4):
            created.append((await self.keys.create(f"k{i}"))[0])
            self.clock.advance(1.5)
        revoked = await self.keys.revoke(created[1].key_id)
        self.assertEqual(await self.keys.list(), [created[0], revoked, created[2], created[3]])
        self.assertEqual(await self.twin().list(), [created[0], revoked, created[2], created[3]])

    @ensure
    async def test_concurrent_creates_get_distinct_ids(self):
        """Keys created at once get distinct ids and secrets, each authenticating to its own key."""
        made = await defer.gatherResults([defer.ensureDeferred(self.keys.create(f"k{i}")) for i in range(8)])
        self.assertEqual(len({k.key_id for k, _ in made}), 8)
        for key, secret in made:
            self.assertEqual(await self.keys.authenticate(secret), key)
        self.assertEqual(len(await self.keys.list()), 8)
        self.assertTrue(all(re.fullmatch("[0-9a-f]{16}", k.key_id) for k, _ in made))
