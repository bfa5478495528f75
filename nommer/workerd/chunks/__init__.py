"""Chunked encoding: split a long source, encode the chunks on many workers, merge.

The recipe and its traps are ``media-notes.md`` section 3. One module per piece:

* ``model``: ``Timeline`` (the source's video frames), ``Chunk`` (one planned
  piece), ``VideoTrack`` (one video stream every chunk encodes);
* ``frames``: the source's frame timeline from ffprobe's packet list;
* ``scenes``: scene cuts on a small proxy (ffmpeg's ``scene`` score);
* ``cuts``: the pure cut planner (scene cuts near the ideal boundaries, or the
  keyframe grid for ladders; chunk lengths bounded);
* ``encode``: the ffmpeg run of one chunk (frame-exact seek, every track);
* ``concat``: the concat list with exact durations, and the stream-copy join;
* ``verify``: the checks a merged output passes before the job is FINISHED.
"""
