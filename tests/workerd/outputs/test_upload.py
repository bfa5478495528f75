"""Upload order and rollback of a job's output files (nommer.workerd.outputs.upload)."""

from twisted.internet import defer

from nommer.core.errors import PermanentJobError
from nommer.workerd.outputs.step import MANIFEST, MEDIA, PLAYLIST, OutputFile
from nommer.workerd.outputs.upload import store_all, upload_order


def f(path, role, size=10):
    return OutputFile(path=path, local="/scratch/" + path, bytes=size, content_type="x/y", role=role)


FILES = [f("stream/master.m3u8", MANIFEST), f("stream/video.m3u8", PLAYLIST), f("stream/b.m4s", MEDIA),
         f("stream/a.m4s", MEDIA), f("stream/manifest.mpd", MANIFEST), f("stream/a.m4s", MEDIA),
         f("poster.jpg", MEDIA)]


def test_media_first_manifests_last_each_path_once():
    order = [x.path for x in upload_order(FILES)]
    assert order == ["poster.jpg", "stream/a.m4s", "stream/b.m4s", "stream/video.m3u8",
                     "stream/manifest.mpd", "stream/master.m3u8"]


def run(coro):
    d = defer.ensureDeferred(coro)
    results = []
    d.addBoth(results.append)
    assert results, "store_all waited on something"
    return results[0]


def test_all_stored_in_order_with_progress():
    stored, progress = [], []

    async def store(x):
        stored.append(x.path)
        return "file:///dest/" + x.path

    async def delete(uri):
        raise AssertionError("nothing to delete")

    uris = run(store_all(FILES, store, delete, on_stored=lambda d, t: progress.append((d, t))))
    assert stored == [x.path for x in upload_order(FILES)]
    assert uris == ["file:///dest/" + p for p in stored]
    assert progress[-1] == (60, 60) and [d for d, _ in progress] == sorted(d for d, _ in progress)


def test_a_failed_upload_deletes_what_was_stored_manifests_first():
    stored, deleted = [], []

    async def store(x):
        if x.path == "stream/master.m3u8":
            raise PermanentJobError("the destination is a directory")
        stored.append(x.path)
        return x.path

    async def delete(uri):
        deleted.append(uri)
        if uri == "stream/a.m4s":
            raise OSError("gone wrong")  # logged, the others still deleted
        return True

    failure = run(store_all(FILES, store, delete))
    assert failure.check(PermanentJobError)
    assert deleted == list(reversed(stored))
    assert deleted[0] == "stream/manifest.mpd"
    assert set(deleted) == set(stored)
    assert "stream/master.m3u8" not in stored
