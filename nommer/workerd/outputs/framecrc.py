"""Reading ffmpeg's ``framecrc`` muxer output: every packet's timestamps, no decoding.

A run ``ffmpeg -i FILE -map ... -c copy -f framecrc LIST`` lists each packet
of the mapped streams (``stream, dts, pts, duration, size, crc``) after a
``#tb <stream>: num/den`` line per stream: the cheapest way to count a
video's frames and read its timestamps exactly (ffprobe's ``pts_time`` has
six digits).
"""


def read_framecrc(path):
    """``{stream index: [(pts, duration), ...]}`` and ``{stream index:
    (num, den)}`` (time bases) of a ``-f framecrc`` file, packets in file
    order. Raises OSError if unreadable, ValueError if malformed."""
    time_bases, packets = {}, {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("#tb "):
                index, _, tb = line[4:].partition(":")
                num, _, den = tb.strip().partition("/")
                time_bases[int(index)] = (int(num), int(den or 1))
            elif line[:1].isdigit():
                fields = [x.strip() for x in line.split(",")]
                packets.setdefault(int(fields[0]), []).append((int(fields[2]), int(fields[3])))
    return packets, time_bases
