"""Launch-stamping wrappers the benches put in BWRAP_BIN (or FFMPEG_BIN/FFPROBE_BIN): bash
scripts that run the real program as a child and append its start and end times to a log."""

# BWRAP_BIN for sandboxed workers: run the real bwrap as a child (outside the sandbox, so the
# log is writable; bwrap's exit status, 128 + N for a signal, is passed on) and append the start
# and end times, the sandboxed tool (the executable after bwrap's last "--": prlimit's and
# setpriv's own "--" come before it) and the whole argv. It is spawned with an empty environment.
# Fill in with % {"real": path of bwrap, "log": path of the log}.
BWRAP_WRAPPER = """#!/bin/bash
s=$EPOCHREALTIME
%(real)s "$@"
rc=$?
e=$EPOCHREALTIME
tool=bwrap prev=
for a in "$@"; do
  if [ "$prev" = "--" ]; then tool=${a##*/}; fi
  prev=$a
done
echo "$s $e $tool $*" >> %(log)s
exit $rc
"""
