"""Target-quality encoding: a CRF search per title, and a per-title ladder.

An mp4, hls or dash output may ask ``"target": {"vmaf": 93, "pool": "mean" |
"p5" | "harmonic_mean", "crf_range": [16, 36], "max_probes": 4}`` instead of
a fixed CRF. Before the output is planned, the outputs nommer calls::

    spec, info = await refine(spec, source, run=..., report=..., ffmpeg_bin=...,
                              vmaf_bin=..., input_path=..., work_dir=...)

and plans and encodes the ``spec`` it gets back.

**The search** (media-notes §4.3, after Av1an's ``target_quality.rs``):

* the *sample*: the whole source when it lasts at most WHOLE_SOURCE_MAX_S;
  else ``n`` windows of WINDOW_S seconds (one keyframe interval, so every
  window starts a GOP as in the final encode) spread evenly over the title,
  ``n`` = SAMPLE_SHARE x the duration / WINDOW_S, between 1 and MAX_WINDOWS,
  the first one preceded by a lead-in of LEAD_IN_S (one GOP) that is
  encoded but not scored (``sample_cuts``: a cold encoder's first GOP
  scores lower than the same frames in the middle of the title), cut by
  input seeking and joined by ffmpeg's ``concat`` filter into a lossless
  file in the scratch dir (the probes' input), and the same without the
  lead-in (what they are scored against);
* a *probe*: the sample encoded by the output's own builder (``mp4.plan``:
  the same encoder, preset, size, fps cap and keyframe grid as the final
  encode), video only, at one CRF; its lead-in dropped by a stream copy
  from its keyframe at LEAD_IN_S; then scored against the sample with
  VMAF (``quality.pair_step``: the probe scaled up to the source's display
  size, frames paired by index, every frame or every 3rd or 5th of a long
  sample: ``probe_subsample``) and pooled by ``pool``; its bitrate read from the cut file;
* the first two probes bisect ``crf_range``; from the third, the CRF is
  interpolated from the probes' scores (linear between the two probes
  around the target; a monotone cubic, Fritsch-Carlson PCHIP, through every
  probe once there are three and their scores fall as the CRF rises);
* it stops when a probe scores within TOLERANCE of the target, when
  ``max_probes`` probes ran, or when the two probes around the target are
  one CRF_STEP apart; the CRF chosen is then the probed one within
  TOLERANCE, else the interpolated one rounded *down* to CRF_STEP (a lower
  CRF is the higher quality: the curve is concave, so interpolation errs
  on the safe side), always inside ``crf_range`` (a target above what the
  lowest CRF gives gets the lowest CRF, and the job says so with
  ``predicted`` below the target).

An **mp4** comes back with ``crf`` set to the chosen CRF (``target`` kept).

A **ladder** (``{"hls": spec or None, "dash": spec or None}``, the package
of ``package.py``): the search runs on the ladder's top rung (its size, fps
and codec, at CRF), then every rung's bitrate is scaled by (the top rung's
bitrate at the chosen CRF, ``bitrate_at`` the probes' / the top rung's
bitrate in the ladder), clamped to SCALE_RANGE; the scaled rungs are encoded from the sample in one ffmpeg run
(``package``'s own per-rung x264/x265 options, average bitrate and VBV as
the final run) and each scored; going up from the lowest rung, a rung whose
score gains less than MIN_RUNG_GAIN over the last rung kept is dropped. The
package comes back with ``ladder`` replaced by that per-title list of rungs
(on both specs: they still share one set of segments).

``info`` (merged into each output's entry in the job document)::

    {"target": {"vmaf": asked, "pool": "mean", "crf": chosen, "predicted": score,
                "probes": [{"crf", "score", "bitrate"}, ...],      # bitrate: bits/s
                "sample_s": seconds scored (the source's duration when probed whole),
                # ladders only:
                "top_bitrate": bits/s of the top rung at crf, "scale": 0.83,
                "rungs": [{"name", "width", "height", "bitrate", "score", "kept"}, ...]}}

The *achieved* score is measured on the final encode, not predicted: the
returned spec always has a ``quality`` field asking for ``vmaf`` with the
probes' model, so the outputs nommer measures the output
(``nommer.workerd.outputs.quality``) and the entry's ``quality.vmaf.<pool>``
is the achieved score.

The probe files live under ``<work_dir>/.target/`` (a name no output can
have: the schema refuses path segments starting with a dot) and are
removed when the search ends.
"""

import math
import os
import shutil

import attr

from nommer.core.errors import PermanentJobError
from nommer.workerd.outputs import boxes, common, mp4, package, quality, vmaf
from nommer.workerd.outputs import ladder as ladder_mod
from nommer.workerd.outputs.step import Step

#: Probe CRFs and the chosen one are multiples of this (x264 and x265 take
#: fractional CRFs; an integer grid would move a steep title's score by up
#: to 3 VMAF points a step).
CRF_STEP = 0.25
#: A probe within this many VMAF points of the target ends the search (Av1an: 1).
TOLERANCE = 0.5
#: Sources up to this long (seconds) are probed whole.
WHOLE_SOURCE_MAX_S = 8.0
#: Seconds of one sampled window: one keyframe interval, so each window is one GOP.
WINDOW_S = common.KEYFRAME_INTERVAL_S
#: Share of a longer source's duration the sample's windows aim at (a probe's encode
#: costs about its seconds x the final encode's cost per second, and a search makes 2-4).
SAMPLE_SHARE = 0.05
#: Most windows in a sample (MAX_WINDOWS x WINDOW_S seconds scored at most).
MAX_WINDOWS = 6
#: Seconds encoded before the first window and not scored (one keyframe interval: see ``sample_cuts``).
LEAD_IN_S = common.KEYFRAME_INTERVAL_S
#: libvmaf scores every n-th frame of a probe, n the first of PROBE_SUBSAMPLES that leaves
#: at most PROBE_FRAMES frames scored (the last one past that). Odd only: x264's B-frame
#: pyramid makes every other frame worse, and scoring every 2nd or 4th frame of a high-motion
#: title read its mean 1.8 VMAF points high (measured; every 3rd: within 0.05).
PROBE_FRAMES = 120
PROBE_SUBSAMPLES = (1, 3, 5)
#: Bounds of a ladder's bitrate scale factor.
SCALE_RANGE = (0.4, 1.2)
#: A ladder rung must score this many VMAF points above the last rung kept below it.
MIN_RUNG_GAIN = 2.0
#: The VMAF model when the output asks for no ``quality`` (libvmaf's default).
DEFAULT_MODEL = "vmaf_v0.6.1"
#: Directory of the probe files under the work dir.
PROBE_DIR = ".target"
#: Pool names of the schema -> keys of ``quality.read_log``'s ``vmaf``.
POOLS = {"mean": "mean", "p5": "p5", "harmonic_mean": "harmonic_mean"}

__all__ = ["refine", "Search", "Probe", "search", "sample_windows", "round_down", "pchip",
           "invert", "scale_factor", "keep_rungs", "bitrate_at", "custom_rungs", "sample_cuts",
           "lead_frames", "video_bitrate"]


# --- the search (pure) -----------------------------------------------------------------------

@attr.s(frozen=True, auto_attribs=True)
class Probe:
    """One probe: ``crf``, its pooled VMAF ``score`` and the probe's video
    ``bitrate`` (bits per second, None when not measured)."""

    crf: float
    score: float
    bitrate: int = None


def round_down(crf, step=CRF_STEP):
    """``crf`` rounded down to a multiple of ``step`` (a float; 24.6 -> 24.5 at 0.25)."""
    return math.floor(crf / step + 1e-9) * step


def _bisect(lo, hi, step):
    return round_down((lo + hi) / 2.0, step)


def pchip(xs, ys):
    """The monotone cubic (Fritsch-Carlson PCHIP, the end slopes as SciPy's
    ``PchipInterpolator``) through the points ``(xs, ys)``, ``xs`` strictly
    increasing: a function of x (extrapolating the end cubics outside).
    Monotone between points where the data is; two points give the line."""
    n = len(xs)
    if n < 2 or any(b <= a for a, b in zip(xs, xs[1:])):
        raise ValueError("pchip needs two or more strictly increasing xs")
    h = [xs[k + 1] - xs[k] for k in range(n - 1)]
    d = [(ys[k + 1] - ys[k]) / h[k] for k in range(n - 1)]
    if n == 2:
        m = [d[0], d[0]]
    else:
        m = [0.0] * n
        for k in range(1, n - 1):
            if d[k - 1] * d[k] > 0:
                w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
                m[k] = (w1 + w2) / (w1 / d[k - 1] + w2 / d[k])
        m[0] = _end_slope(h[0], h[1], d[0], d[1])
        m[-1] = _end_slope(h[-1], h[-2], d[-1], d[-2])

    def f(x):
        k = 0
        while k < n - 2 and x > xs[k + 1]:
            k += 1
        t = (x - xs[k]) / h[k]
        h00, h10 = (1 + 2 * t) * (1 - t) ** 2, t * (1 - t) ** 2
        h01, h11 = t * t * (3 - 2 * t), t * t * (t - 1)
        return h00 * ys[k] + h10 * h[k] * m[k] + h01 * ys[k + 1] + h11 * h[k] * m[k + 1]
    return f


def _end_slope(h0, h1, d0, d1):
    m = ((2 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
    if m * d0 <= 0:
        return 0.0
    if d0 * d1 < 0 and abs(m) > 3 * abs(d0):
        return 3 * d0
    return m


def invert(f, target, lo, hi, iterations=50):
    """The x in [lo, hi] where the decreasing function ``f`` equals
    ``target`` (bisection; ``f(lo) >= target >= f(hi)`` assumed)."""
    for _ in range(iterations):
        mid = (lo + hi) / 2.0
        if f(mid) >= target:
            lo = mid
        else:
            hi = mid
    return lo


class Search:
    """The CRF search's state: ask ``next_crf()``, probe it, ``add()`` the
    score, until ``next_crf()`` is None; then ``result()``.

    :param target: the VMAF score to reach (pooled as the caller pools).
    :param crf_range: ``(lo, hi)``, lo <= hi.
    :param max_probes: most probes (>= 1).
    Scores are assumed to fall as the CRF rises (a probe that breaks this is
    kept, and interpolation then falls back to the straight line).
    """

    def __init__(self, target, crf_range, max_probes, *, tolerance=TOLERANCE, step=CRF_STEP):
        lo, hi = float(crf_range[0]), float(crf_range[1])
        if lo > hi:
            raise ValueError(f"crf_range {crf_range!r}: the lowest CRF is above the highest")
        self.target = float(target)
        self.lo, self.hi = lo, hi
        self.max_probes = int(max_probes)
        self.tolerance = tolerance
        self.step = step
        self.probes = []
        self._done = None  # (crf, predicted) once decided

    # The probes scoring at least the target (good) and below it (bad) that are nearest it.
    def _good(self):
        good = [p for p in self.probes if p.score >= self.target]
        return max(good, key=lambda p: p.crf) if good else None

    def _bad(self):
        bad = [p for p in self.probes if p.score < self.target]
        return min(bad, key=lambda p: p.crf) if bad else None

    def add(self, crf, score, bitrate=None):
        """Record the probe at ``crf`` that scored ``score`` (bitrate: bits/s)."""
        self.probes.append(Probe(float(crf), float(score), bitrate))

    def _hit(self):
        near = [p for p in self.probes if abs(p.score - self.target) <= self.tolerance]
        if not near:
            return None
        # Several within tolerance: the highest CRF among those reaching the target, else the nearest.
        reaching = [p for p in near if p.score >= self.target]
        best = max(reaching, key=lambda p: p.crf) if reaching else min(
            near, key=lambda p: abs(p.score - self.target))
        return best.crf, best.score

    def estimate(self):
        """``(crf, predicted score)``: where the probes so far put the target,
        rounded down to the step and clamped to the range (not yet probed)."""
        good, bad = self._good(), self._bad()
        if good is not None and bad is not None and good.crf < bad.crf:
            f = self._curve(good, bad)
            crf = invert(f, self.target, good.crf, bad.crf)
            crf = max(good.crf, round_down(crf, self.step))
            return crf, f(crf)
        pts = sorted(self.probes, key=lambda p: p.crf)
        if good is not None and bad is None:
            # Every probe beats the target: go past the highest CRF, along the last two probes.
            edge, other = pts[-1], (pts[-2] if len(pts) > 1 else None)
            limit = self.hi
        elif bad is not None and good is None:
            edge, other = pts[0], (pts[1] if len(pts) > 1 else None)
            limit = self.lo
        else:  # good above bad: a non-monotone pair; trust the good one
            return good.crf, good.score
        if other is None or other.score == edge.score or other.crf == edge.crf:
            return (limit, None) if edge.crf != limit else (edge.crf, edge.score)
        slope = (edge.score - other.score) / (edge.crf - other.crf)
        if slope >= 0:
            return (limit, None) if edge.crf != limit else (edge.crf, edge.score)
        crf = edge.crf + (self.target - edge.score) / slope
        crf = min(max(round_down(crf, self.step), self.lo), self.hi)
        return crf, edge.score + slope * (crf - edge.crf)

    def _curve(self, good, bad):
        """Score as a function of CRF between ``good`` and ``bad``: PCHIP
        through every probe when there are three or more with distinct
        CRFs and falling scores, else the line through the two."""
        by_crf = {}
        for p in self.probes:
            by_crf.setdefault(p.crf, p)
        pts = sorted(by_crf.values(), key=lambda p: p.crf)
        falling = all(b.score < a.score for a, b in zip(pts, pts[1:]))
        if len(pts) >= 3 and falling:
            return pchip([p.crf for p in pts], [p.score for p in pts])
        return pchip([good.crf, bad.crf], [good.score, bad.score])

    def next_crf(self):
        """The CRF to probe next, or None when the search is over."""
        if self._done is not None:
            return None
        hit = self._hit()
        if hit is not None:
            self._done = hit
            return None
        if len(self.probes) >= self.max_probes:
            self._done = self._final()
            return None
        if not self.probes:
            return self._new(_bisect(self.lo, self.hi, self.step))
        if len(self.probes) == 1:
            p = self.probes[0]
            if p.score >= self.target:
                return self._new(_bisect(p.crf, self.hi, self.step) if p.crf < self.hi else None)
            return self._new(_bisect(self.lo, p.crf, self.step) if p.crf > self.lo else None)
        crf, _ = self.estimate()
        return self._new(crf)

    def _new(self, crf):
        """``crf`` if it is worth probing (not probed yet, inside the range),
        else None with the search decided."""
        if crf is not None and self.lo <= crf <= self.hi and all(
                abs(p.crf - crf) > 1e-9 for p in self.probes):
            good, bad = self._good(), self._bad()
            if not (good and bad and not good.crf < crf < bad.crf):
                return crf
        self._done = self._final()
        return None

    def _final(self):
        """``(crf, predicted)`` when no more probes run."""
        hit = self._hit()
        if hit is not None:
            return hit
        good, bad = self._good(), self._bad()
        if good is not None and bad is not None and good.crf < bad.crf:
            crf, predicted = self.estimate()
            return crf, predicted
        if good is not None and bad is None:
            # Even the highest CRF probed beats the target: the estimate past it (clamped to hi)
            # is an extrapolation; keep the probed one unless the range ends there.
            return good.crf, good.score
        if bad is not None and good is None:
            # Nothing reached the target: the lowest CRF of the range, or the best probed.
            low = min(self.probes, key=lambda p: p.crf)
            if low.crf <= self.lo:
                return low.crf, low.score
            crf, predicted = self.estimate()
            return crf, predicted
        return good.crf, good.score

    def result(self):
        """``(crf, predicted score or None)`` once ``next_crf()`` returned None."""
        if self._done is None:
            raise RuntimeError("the search is not over: call next_crf() until it returns None")
        return self._done


def search(score_of, target, crf_range, max_probes, **kw):
    """Run a ``Search`` with ``score_of(crf) -> score`` (for tests and
    tools): ``(crf, predicted, [Probe, ...])``."""
    s = Search(target, crf_range, max_probes, **kw)
    while (crf := s.next_crf()) is not None:
        s.add(crf, score_of(crf))
    crf, predicted = s.result()
    return crf, predicted, list(s.probes)


# --- the sample (pure) -----------------------------------------------------------------------

def sample_windows(duration_s):
    """The windows scored of a ``duration_s``-second source: None for the
    whole source (short, or of unknown duration), else a list of
    ``(start_s, length_s)``, WINDOW_S long, spread evenly (window i centred
    at (i + 1/2)/n of the title), the first starting LEAD_IN_S or later."""
    if not duration_s or duration_s <= WHOLE_SOURCE_MAX_S:
        return None
    n = max(1, min(MAX_WINDOWS, int(duration_s * SAMPLE_SHARE / WINDOW_S + 0.5)))
    windows = []
    for i in range(n):
        start = duration_s * (i + 0.5) / n - WINDOW_S / 2.0
        windows.append((round(min(max(LEAD_IN_S, start), duration_s - WINDOW_S), 3), float(WINDOW_S)))
    return windows


def sample_cuts(windows):
    """The spans of the source (``(start_s, length_s)``) the sample is cut
    from: the windows, the first one with the LEAD_IN_S before it. That
    lead-in is encoded but not scored: an encoder starting cold gives its
    first GOP about 2 VMAF points less than it gives the same frames in the
    middle of a title (x264's rate control and macroblock tree settle over
    the first GOP; measured), and the final encode reaches the windows warm.
    The later windows follow the earlier ones in the same encode."""
    (start, length), rest = windows[0], list(windows[1:])
    return [(round(start - LEAD_IN_S, 3), round(length + LEAD_IN_S, 3))] + rest


def lead_frames(fps):
    """Frames of the lead-in at ``fps`` (a Fraction, or None: 25): those
    before the keyframe the probe encode puts at LEAD_IN_S (the first frame
    at or after it, as ``common.keyframe_args`` asks)."""
    return math.ceil(LEAD_IN_S * float(fps or 25) - 1e-6)


def probe_subsample(seconds, fps):
    """libvmaf's ``n_subsample`` for a probe scoring ``seconds`` at ``fps``
    (None: 25): see PROBE_SUBSAMPLES."""
    frames = (seconds or 0) * float(fps or 25)
    return next((n for n in PROBE_SUBSAMPLES if frames / n <= PROBE_FRAMES), PROBE_SUBSAMPLES[-1])


# --- the ladder (pure) -----------------------------------------------------------------------

def scale_factor(probe_bitrate, top_bitrate, bounds=SCALE_RANGE):
    """``probe_bitrate / top_bitrate`` (bits per second both) clamped to ``bounds``."""
    return min(max(probe_bitrate / float(top_bitrate), bounds[0]), bounds[1])


def keep_rungs(scores, min_gain=MIN_RUNG_GAIN):
    """Which rungs to keep, given their ``scores`` from the lowest bitrate
    up: the lowest always; each next one when it scores at least
    ``min_gain`` above the last one kept. A list of bools."""
    kept, last = [], None
    for score in scores:
        keep = last is None or score - last >= min_gain
        kept.append(keep)
        if keep:
            last = score
    return kept


def bitrate_at(probes, crf):
    """Bits per second at ``crf`` from the ``probes`` (``Probe`` with
    bitrates): the probed one, else the logarithm of the bitrate
    interpolated linearly in CRF between the two probes around ``crf`` (or
    extrapolated from the two nearest; one probe: halved every 6 CRF, x264's
    rule of thumb)."""
    pts = sorted({p.crf: p for p in probes if p.bitrate}.values(), key=lambda p: p.crf)
    if not pts:
        raise ValueError("no probe with a bitrate")
    for p in pts:
        if abs(p.crf - crf) < 1e-9:
            return float(p.bitrate)
    if len(pts) == 1:
        return pts[0].bitrate * 2.0 ** ((pts[0].crf - crf) / 6.0)
    below = [p for p in pts if p.crf < crf]
    above = [p for p in pts if p.crf > crf]
    if below and above:
        a, b = below[-1], above[0]
    elif above:
        a, b = above[0], above[1]
    else:
        a, b = below[-2], below[-1]
    t = (crf - a.crf) / (b.crf - a.crf)
    return math.exp(math.log(a.bitrate) + t * (math.log(b.bitrate) - math.log(a.bitrate)))


def custom_rungs(rungs, factor):
    """The schema's custom ladder (a list of ``{"height", "bitrate",
    "fps_max"?}``) giving ``ladder.plan_rungs`` the same sizes and fps as the
    planned ``rungs`` (``ladder.Rung``), each bitrate x ``factor`` (bits per
    second, at least 16000 as the schema allows). ``height`` is the rung's
    short side (how plan_rungs reads a rung on a portrait source too)."""
    out = []
    for r in rungs:
        rung = {"height": min(r.width, r.height), "bitrate": max(16000, int(round(r.bitrate_bps * factor)))}
        if r.fps is not None:
            rung["fps_max"] = float(r.fps)
        out.append(rung)
    return out


# --- the runs --------------------------------------------------------------------------------

def _specs_of(spec):
    """The output specs a unit holds: ``[spec]`` or the package's hls/dash ones."""
    if spec.get("type") is None and ("hls" in spec or "dash" in spec):
        return [s for s in (spec.get("hls"), spec.get("dash")) if s]
    return [spec]


def _model_of(specs):
    for s in specs:
        if s.get("quality") and s["quality"].get("model"):
            return s["quality"]["model"]
    return DEFAULT_MODEL


def with_quality(spec, model):
    """A copy of the output ``spec`` whose ``quality`` asks for ``vmaf``
    (with ``model``; other metrics and the subsample kept)."""
    out = dict(spec)
    quality = dict(spec.get("quality") or {})
    metrics = list(quality.get("metrics") or [])
    if "vmaf" not in metrics:
        metrics.insert(0, "vmaf")
    quality["metrics"] = metrics
    quality.setdefault("model", model)
    quality.setdefault("subsample", 1)
    out["quality"] = quality
    return out


def _sample_step(cuts, source, *, ffmpeg_bin, input_path, sample_path, reference_path):
    """The ffmpeg run cutting ``cuts`` (``(start_s, length_s)`` spans, the
    first with its lead-in: ``sample_cuts``) out of the source (input
    seeking, frame-exact: ffmpeg decodes from the keyframe before and drops
    what precedes the time), joined by ``concat``, written twice, video
    only, lossless (Ut Video: it decodes 4x faster than FFV1, and each probe
    decodes the sample twice): ``sample_path``, the probes' input, and
    ``reference_path``, the same without the lead-in's frames, what the
    probes are scored against."""
    argv = [ffmpeg_bin, "-hide_banner", "-nostdin", "-y"]
    for start, length in cuts:
        argv += ["-ss", f"{start:.3f}", "-t", f"{length:.3f}", "-i", input_path]
    n = len(cuts)
    inputs = "".join(f"[{i}:V:0]" for i in range(n))
    joined = f"{inputs}concat=n={n}:v=1:a=0" if n > 1 else "[0:V:0]null"
    graph = (f"{joined},split=2[s][r0];"
             f"[r0]trim=start_frame={lead_frames(source.fps)},setpts=PTS-STARTPTS[r]")
    lossless = ["-an", "-sn", "-dn", "-c:v", "utvideo", "-f", "matroska"]
    argv += ["-filter_complex", graph, "-map", "[s]", *lossless, sample_path,
             "-map", "[r]", *lossless]
    argv += common.progress_args(reference_path)
    seconds = sum(length for _, length in cuts)
    return Step(what="target-quality sample", argv=argv, expected_s=seconds - LEAD_IN_S,
                weight=seconds * (source.width or 0) * (source.height or 0) / 1e6 * 0.2)


def _cut_step(pairs, *, ffmpeg_bin):
    """The ffmpeg run dropping the lead-in of probe encodes by stream copy:
    ``pairs`` of (encoded path, path to write), each cut at its keyframe at
    LEAD_IN_S (``-ss`` half a frame later seeks back to it), the MP4 written
    with its first frame at 0 (``-avoid_negative_ts make_zero``: without it
    ffmpeg 5.1's edit list hides the first frame)."""
    argv = [ffmpeg_bin, "-hide_banner", "-nostdin", "-y"]
    for encoded, _ in pairs:
        argv += ["-ss", f"{LEAD_IN_S + 0.005:.3f}", "-i", encoded]
    for k, (_, out) in enumerate(pairs):
        argv += ["-map", f"{k}:v:0", "-c", "copy", "-avoid_negative_ts", "make_zero", "-f", "mp4"]
        argv += [out] if k < len(pairs) - 1 else common.progress_args(out)
    return Step(what="target-quality probe cut", argv=argv, weight=0.01)


def video_bitrate(path, seconds=None):
    """Bits per second of the video of the MP4 at ``path``: its ``mdat``
    payload (the probes have no audio) over the video track's duration
    (``seconds`` when the track does not say)."""
    track = mp4.read_video_track(path)
    with open(path, "rb") as f:
        mdat = boxes.find(f, "mdat")
    payload = (mdat.size - mdat.header) if mdat is not None else os.path.getsize(path)
    duration = (track or {}).get("duration_s") or seconds
    return int(round(payload * 8 / duration))


class _Prober:
    """Runs the probes of one unit: the sample, each CRF probe, the rung probes."""

    def __init__(self, source, *, run, report, ffmpeg_bin, vmaf_bin, input_path, work_dir, model,
                 pool, total_runs):
        self.source = source
        self.run = run
        self.report = report
        self.ffmpeg_bin = ffmpeg_bin
        self.vmaf_bin = vmaf_bin
        self.work_dir = work_dir
        self.dir = os.path.join(work_dir, PROBE_DIR)
        self.model = model
        self.pool = pool
        self.input = self.reference = input_path  # the probes' input, what they are scored against
        self.scored_s = source.duration_s
        self.sample_source = attr.evolve(source, audio=())
        self.windows = sample_windows(source.duration_s)
        self.done_runs = 0
        # Each probe: its encode, the cut of its lead-in (sampled sources), its VMAF run.
        self.total_runs = max(1, total_runs + (1 if self.windows else 0))
        self.reported = 0.0

    def _progress(self, fraction):
        value = min(1.0, (self.done_runs + min(max(fraction, 0.0), 1.0)) / self.total_runs)
        if value > self.reported:
            self.reported = value
            self.report(value)

    async def _run(self, step, counts=True):
        await self.run([step], on_fraction=self._progress if counts else None)
        if counts:
            self.done_runs += 1
            self._progress(0.0)

    async def prepare(self):
        """Make the probe dir and, for a long source, the sample and its reference."""
        if os.path.isdir(self.dir):
            shutil.rmtree(self.dir)
        os.makedirs(self.dir)
        if not self.source.duration_s:
            raise PermanentJobError("the source's duration is unknown: a target-quality search needs it")
        if self.windows:
            cuts = sample_cuts(self.windows)
            sample, reference = os.path.join(self.dir, "sample.mkv"), os.path.join(self.dir, "reference.mkv")
            await self._run(_sample_step(cuts, self.source, ffmpeg_bin=self.ffmpeg_bin,
                                         input_path=self.input, sample_path=sample,
                                         reference_path=reference))
            self.input, self.reference = sample, reference
            self.scored_s = sum(length for _, length in self.windows)
            self.sample_source = attr.evolve(self.source, duration_s=self.scored_s + LEAD_IN_S, audio=())

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    async def _without_lead(self, encoded):
        """The probe encodes ``encoded`` (paths) as scored: as they are for a
        source probed whole, else each cut after its lead-in (one run)."""
        if not self.windows:
            return list(encoded)
        cut = [os.path.splitext(path)[0] + "-cut.mp4" for path in encoded]
        await self._run(_cut_step(list(zip(encoded, cut)), ffmpeg_bin=self.ffmpeg_bin), counts=False)
        for path in encoded:
            os.remove(path)
        return cut

    async def _score(self, distorted, name):
        """The pooled VMAF of the probe ``distorted`` against the reference."""
        log_path = os.path.join(self.dir, f"{name}.json")
        step = quality.pair_step(
            distorted, self.reference, metrics=["vmaf"], model=self.model,
            subsample=probe_subsample(self.scored_s, self.source.fps), ffmpeg_bin=self.ffmpeg_bin,
            vmaf_bin=self.vmaf_bin, log_path=log_path, ref_width=self.source.width,
            ref_height=self.source.height, fps=self.source.fps, what=f"target-quality score {name}",
            weight=1.0, expected_s=self.scored_s)
        await self._run(step)
        score = (quality.read_log(log_path, ["vmaf"]).get("vmaf") or {}).get(POOLS[self.pool])
        if score is None:
            raise PermanentJobError(f"the VMAF run of the target-quality probe {name} gave no score")
        return float(score)

    async def crf_probe(self, spec, crf):
        """Encode the sample as the mp4 ``spec`` at ``crf`` (``mp4.plan``),
        score it: a ``Probe``."""
        name = f"crf{crf:g}"
        probe_spec = dict(spec, name=f"{PROBE_DIR}/{name}.mp4", crf=crf)
        probe_spec.pop("bitrate", None)
        steps = mp4.plan(probe_spec, self.sample_source, ffmpeg_bin=self.ffmpeg_bin,
                         input_path=self.input, work_dir=self.work_dir)
        for step in steps:
            await self._run(attr.evolve(step, what=f"target-quality probe at CRF {crf:g}"))
        (path,) = await self._without_lead([common.local_path(self.work_dir, probe_spec["name"])])
        bitrate = video_bitrate(path, self.scored_s)
        score = await self._score(path, name)
        os.remove(path)
        return Probe(crf, score, bitrate)

    async def rung_probes(self, rungs, preset):
        """Encode the sample at each of ``rungs`` (``ladder.Rung``) as the
        package encodes them (one run: ``package``'s per-rung encoder
        options, each rung to its own file), score each: their scores, in order."""
        n = len(rungs)
        argv = common.input_args(self.ffmpeg_bin, self.input)
        argv += ["-filter_complex", ";".join(package.rung_chains(rungs, "[0:V:0]"))]
        outs = []
        for i, rung in enumerate(rungs):
            out = os.path.join(self.dir, f"rung{i}.mp4")
            outs.append(out)
            argv += ["-map", f"[v{i}]", "-an", "-preset:v", preset, "-pix_fmt:v", "yuv420p"]
            argv += package._video_args(0, rung) + ["-f", "mp4"]
            argv += [out] if i < n - 1 else common.progress_args(out)
        seconds = self.sample_source.duration_s
        await self._run(Step(what="target-quality rung probes", argv=argv, expected_s=seconds,
                             weight=seconds * sum(r.pixels for r in rungs) / 1e6))
        scores = []
        for i, out in enumerate(await self._without_lead(outs)):
            scores.append(await self._score(out, f"rung{i}"))
            os.remove(out)
        return scores


def _check(spec, source, vmaf_bin):
    target = spec["target"]
    if vmaf_bin is None:
        raise PermanentJobError(f"a target quality is searched with VMAF, and this worker has none: "
                                f"{vmaf.HOW_TO_ENABLE}")
    if not source.has_video:
        raise PermanentJobError("the source has no video stream: a target quality needs video")
    if spec.get("type") == "mp4" and spec.get("image_path"):
        raise PermanentJobError("a target quality cannot apply to an audio merge (image_path): "
                                "its picture is a still image; give it a crf instead")
    if spec.get("type") == "mp4" and spec.get("bitrate") is not None:
        raise PermanentJobError("an mp4 output takes a target quality or a bitrate, not both")
    lo, hi = target.get("crf_range", (16, 36))
    if lo > hi:
        raise PermanentJobError(f"target.crf_range [{lo:g}, {hi:g}]: the lowest CRF is above the highest")


async def refine(spec, source, *, run, report, ffmpeg_bin, vmaf_bin, input_path, work_dir):
    """Search the CRF (and for a ladder, the per-title rungs) that meets
    ``spec``'s ``target`` (see the module docstring).

    :param spec: a normalized mp4 output with ``target``, or a package
        ``{"hls": spec or None, "dash": spec or None}`` whose specs have it.
    :param source: ``SourceInfo`` of the source.
    :param run: ``await run(steps, on_fraction=None)`` runs ``Step`` s in the
        sandbox (``on_fraction(0..1)`` as each runs).
    :param report: ``report(fraction)``, 0..1, the search's progress (monotonic).
    :param ffmpeg_bin: the ffmpeg of the encodes (and the sample).
    :param vmaf_bin: the VMAF-capable ffmpeg (``vmaf.find_vmaf_ffmpeg``), or None.
    :param input_path: absolute path of the source.
    :param work_dir: the job's scratch output directory (probe files go in
        ``<work_dir>/.target`` and are removed at the end).
    :returns: ``(spec, info)``: the spec to plan (a new dict; an mp4 with
        ``crf`` chosen, a package with a per-title ``ladder``, each output
        with ``quality`` asking for ``vmaf``), and ``{"target": {...}}``.
    :raises PermanentJobError: no VMAF binary, no video, an audio merge or
        an mp4 bitrate with a target, a crf_range upside down, a probe run
        failing (from ``run``).
    """
    specs = _specs_of(spec)
    first = next(s for s in specs if s.get("target"))
    target = first["target"]
    _check(first, source, vmaf_bin)
    is_ladder = first["type"] in ("hls", "dash")
    pool = target.get("pool", "mean")
    max_probes = int(target.get("max_probes", 4))
    model = _model_of(specs)
    rungs = ladder_mod.plan_rungs(first, source) if is_ladder else None
    runs = max_probes * 2 + ((1 + len(rungs)) if is_ladder else 0)
    prober = _Prober(source, run=run, report=report, ffmpeg_bin=ffmpeg_bin, vmaf_bin=vmaf_bin,
                     input_path=input_path, work_dir=work_dir, model=model, pool=pool,
                     total_runs=runs)
    try:
        await prober.prepare()
        if is_ladder:
            top = rungs[-1]
            probe_spec = {"type": "mp4", "codec": first.get("codec", "h264"),
                          "height": min(top.width, top.height),
                          "encoder_preset": first.get("encoder_preset", "medium"),
                          "fps_max": float(top.fps) if top.fps_capped else None}
        else:
            probe_spec = dict(first)
            probe_spec.pop("quality", None)
        s = Search(target["vmaf"], target.get("crf_range", (16, 36)), max_probes)
        while (crf := s.next_crf()) is not None:
            p = await prober.crf_probe(probe_spec, crf)
            s.add(p.crf, p.score, p.bitrate)
        crf, predicted = s.result()
        info = {"vmaf": target["vmaf"], "pool": pool, "crf": crf,
                "predicted": round(predicted, 3) if predicted is not None else None,
                "probes": [{"crf": p.crf, "score": round(p.score, 3), "bitrate": p.bitrate}
                           for p in s.probes],
                "sample_s": round(prober.scored_s, 3)}
        if not is_ladder:
            out = with_quality(dict(spec, crf=crf), model)
            return out, {"target": info}

        # The ladder: the top rung's bitrate at the chosen CRF, scaling every rung.
        factor = scale_factor(bitrate_at(s.probes, crf), top.bitrate_bps)
        info["top_bitrate"] = int(round(bitrate_at(s.probes, crf)))
        scaled = ladder_mod.plan_rungs(dict(first, ladder=custom_rungs(rungs, factor)), source)
        scores = await prober.rung_probes(scaled, first.get("encoder_preset", "medium"))
        kept = keep_rungs(scores)
        info["scale"] = round(factor, 4)
        info["rungs"] = [{"name": r.name, "width": r.width, "height": r.height,
                          "bitrate": r.bitrate_bps, "score": round(sc, 3), "kept": k}
                         for r, sc, k in zip(scaled, scores, kept)]
        ladder = custom_rungs([r for r, k in zip(scaled, kept) if k], 1.0)
        out = {k: (with_quality(dict(v, ladder=ladder), model) if v else v) for k, v in spec.items()}
        return out, {"target": info}
    finally:
        prober.cleanup()
        report(1.0)
