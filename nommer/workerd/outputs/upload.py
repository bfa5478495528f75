"""Storing a job's output files so that a player never sees a manifest that
names a missing file, and a failed job leaves nothing half-written.

Order: every ``MEDIA`` file (segments, pictures, MP4s), then every
``PLAYLIST`` (per-rung and audio playlists, VTTs), then every ``MANIFEST``
(master playlists, MPDs, storyboard JSON); within a role, in path order. A
path listed by two outputs (CMAF segments shared by HLS and DASH) is stored
once. If one upload fails, what this attempt stored is deleted, manifests
first, and the upload's error is raised.
"""

from twisted.logger import Logger

from nommer.core.uri import redact_uri

log = Logger()


def upload_order(files):
    """``OutputFile`` list -> the files to store, deduplicated by path, in upload order."""
    unique = {}
    for f in files:
        unique.setdefault(f.path, f)
    return sorted(unique.values(), key=lambda f: (f.role, f.path))


async def store_all(files, store, delete, *, on_stored=None, job_id=None):
    """Store ``files`` (``upload_order`` of them) with ``await store(file)``
    (returns the stored URI); ``on_stored(done_bytes, total_bytes)`` after
    each. On a failure, ``await delete(uri)`` every stored one in reverse
    order (so manifests go first; a failing delete is logged, not raised)
    and raise the upload's error. Returns the stored URIs in order."""
    ordered = upload_order(files)
    total = sum(f.bytes for f in ordered)
    stored, done = [], 0
    try:
        for f in ordered:
            stored.append(await store(f))
            done += f.bytes
            if on_stored is not None:
                on_stored(done, total)
    except BaseException:
        for uri in reversed(stored):
            try:
                await delete(uri)
            except Exception:
                log.failure("job {job_id}: could not delete {uri} after a failed upload",
                            job_id=job_id, uri=redact_uri(uri))
        raise
    return stored
