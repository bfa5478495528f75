"""Quality metrics (VMAF, PSNR, SSIM) of an output against its source.

An mp4, hls or dash output with a ``quality`` field (``{"metrics": [...],
"model": ..., "subsample": N}``) is measured after its builder finished:
``plan`` gives the ffmpeg runs, the outputs nommer runs them in the sandbox,
``finish`` reads their logs, writes a per-frame report uploaded beside the
output and puts the pooled figures in the output's info. ``pair_step`` and
``read_log`` are the measurement itself, shared with the compare output
(``compare``) and the target-quality search (``target``).

**The pairing** (media-notes §4.2). One ffmpeg run per pair, the distorted
video first and the reference second::

    [0:v]fps=SRC_FPS,scale=W:H:flags=bicubic,format=yuv420p,setsar=1,settb=1/SRC_FPS,setpts=N[d];
    [1:v]scale=W:H:flags=bicubic,format=yuv420p,setsar=1,settb=1/SRC_FPS,setpts=N,split=3[r0][r1][r2];
    [d][r0]psnr,metadata=print:key=lavfi.psnr.mse.y:file=LOG.psnr.txt[d1];
    [d1][r1]ssim,metadata=print:key=lavfi.ssim.Y:file=LOG.ssim.txt[d2];
    [d2][r2]libvmaf=model=version=MODEL:n_threads=T:n_subsample=N:log_fmt=json:log_path=LOG

* measured at the reference's display size (W x H: a rung is scaled up with
  bicubic, as Netflix measures; a non-square-pixel reference is scaled to
  square pixels);
* ``fps`` brings a rung whose frame rate was lowered back to the
  source's (each kept frame shown as long as the frames it replaced);
* ``settb,setpts=N`` on both numbers frames 0, 1, 2... in one time base, so
  frame k of one pairs with frame k of the other whatever the containers'
  time bases (mp4 1/15360 against mkv 1/1000) or start offsets;
* PSNR and SSIM are ffmpeg's own ``psnr`` and ``ssim`` filters in every
  case (the VMAF binary's or the system ffmpeg's), so a figure does not
  change with the binary: per-frame values from the frame metadata the
  filters set (six decimals), pooled as the filters pool them. VMAF is
  libvmaf's (the VMAF-capable ffmpeg, ``nommer.workerd.outputs.vmaf``).

**The figures** (``read_log``), each only when asked:

* ``vmaf``: ``{"mean", "min", "harmonic_mean"}`` as libvmaf pools the
  frames it scored (every ``subsample``-th), ``"p1"``, ``"p5"``: the 1st and
  5th percentiles of the per-frame scores (linear interpolation between
  ranks, as numpy's default);
* ``psnr_y``: PSNR of the luma over the whole clip, dB, from the mean of the
  frames' squared errors (what ffmpeg's ``psnr`` filter prints as ``y``);
  ``PSNR_MAX_DB`` when the pictures are identical;
* ``ssim``: the mean of the frames' luma SSIM (ffmpeg's ``ssim`` filter's
  ``Y``), 0..1;
* ``frames``: how many frame pairs were scored (all of them when PSNR or
  SSIM is asked; with VMAF alone, every ``subsample``-th).

**The report** beside the output (``write_report``), JSON:
``{"metrics", "model", "subsample", "pooled": figures, "frames": [{"frame":
n, "vmaf", "psnr_y", "ssim"}]}`` (``vmaf`` only on scored frames): an mp4's
is ``<name>.quality.json``, a ladder's one per rung,
``<dir>/<rung>.quality.json``. The job document gets ``quality``: the
figures and ``log`` (the report's path) for an mp4; ``{"rungs": [{"name",
"width", "height", figures..., "log"}]}`` for a ladder.

A ladder's rung is read straight from its CMAF segments, init segment then
media segments in order, through ffmpeg's ``concatf`` protocol (the bytes
concatenated as a file would be; no copy in scratch). An hls and a dash
output sharing segments measure each rung once when they ask the same.
"""

import json
import math
import os
import re
from fractions import Fraction

from nommer.core.errors import PermanentJobError
from nommer.core.storage.content_types import content_type_for_name
from nommer.workerd.outputs import common
from nommer.workerd.outputs.step import MEDIA, OutputFile, OutputResult, Step
from nommer.workerd.outputs.vmaf import HOW_TO_ENABLE

#: PSNR given for identical pictures (squared error 0: ffmpeg says "inf").
PSNR_MAX_DB = 100.0
#: The per-frame report's file name ends so.
REPORT_SUFFIX = ".quality.json"
#: Scratch directory (in the work dir; no output name starts with ".") of the raw logs.
RAW_DIR = ".quality"
#: Frame metadata keys the psnr and ssim filters set, printed to the logs.
PSNR_KEY = "lavfi.psnr.mse.y"
SSIM_KEY = "lavfi.ssim.Y"
#: Most libvmaf threads (it scales to about the core count).
MAX_VMAF_THREADS = 8
#: Peak value of 8-bit luma (both inputs are made yuv420p).
_PEAK = 255.0


# --- the measurement run -----------------------------------------------------------------

def escape_filter_value(value):
    """``value`` (a file path) escaped for an option value inside a filter
    graph string: first for the filter's options (``\\ ' :``), then for the
    graph (``\\ ' [ ] , ;``)."""
    value = re.sub(r"([\\':])", r"\\\1", str(value))
    return re.sub(r"([\\'\[\],;])", r"\\\1", value)


def raw_logs(log_path):
    """The files a pair step writes: ``{"vmaf": log_path`` (libvmaf's JSON),
    ``"psnr": log_path + ".psnr.txt", "ssim": log_path + ".ssim.txt"}`` (the
    metadata filter's prints), and ``"list"``: ``log_path + ".list"`` (the
    concatf list of a distorted given as several files)."""
    return {"vmaf": log_path, "psnr": f"{log_path}.psnr.txt", "ssim": f"{log_path}.ssim.txt",
            "list": f"{log_path}.list"}


def _rate(fps):
    """``fps`` (Fraction, float or None) as ffmpeg's ``num/den`` text, or None."""
    if not fps:
        return None
    value = Fraction(fps).limit_denominator(1001000)
    return f"{value.numerator}/{value.denominator}"


def pair_graph(*, metrics, model, subsample, ref_width, ref_height, fps, log_path, threads=None):
    """The ``-filter_complex`` text measuring input 0 (distorted) against
    input 1 (reference) for ``metrics`` (a list of ``"vmaf"``, ``"psnr"``,
    ``"ssim"``): see the module docstring. ``ref_width``/``ref_height``:
    the reference's display size, pixels; ``fps``: its frames per second
    (a ``Fraction``; None when unknown: no ``fps`` filter, time base 1/25);
    ``subsample``: libvmaf scores every ``subsample``-th frame; ``threads``:
    libvmaf's (default: the machine's cores, at most MAX_VMAF_THREADS)."""
    wanted = [m for m in ("psnr", "ssim", "vmaf") if m in metrics]
    if not wanted:
        raise ValueError("no metric asked")
    rate = _rate(fps)
    tb = _frame_time_base(rate) if rate else "1/25"
    size = f"scale={int(ref_width)}:{int(ref_height)}:flags=bicubic,format=yuv420p,setsar=1"
    timing = f"settb={tb},setpts=N"
    graph = ["[0:v]" + (f"fps={rate}," if rate else "") + f"{size},{timing}[d0]"]
    refs = "".join(f"[r{i}]" for i in range(len(wanted)))
    graph.append(f"[1:v]{size},{timing}" + (f",split={len(wanted)}{refs}" if len(wanted) > 1 else "[r0]"))
    logs = raw_logs(log_path)
    threads = threads or max(1, min(os.cpu_count() or 1, MAX_VMAF_THREADS))
    for i, metric in enumerate(wanted):
        last = i == len(wanted) - 1
        head = f"[d{i}][r{i}]"
        if metric == "psnr":
            body = f"psnr,metadata=mode=print:key={PSNR_KEY}:file={escape_filter_value(logs['psnr'])}"
        elif metric == "ssim":
            body = f"ssim,metadata=mode=print:key={SSIM_KEY}:file={escape_filter_value(logs['ssim'])}"
        else:
            body = (f"libvmaf=model=version={model}:n_threads={threads}:n_subsample={int(subsample)}"
                    f":log_fmt=json:log_path={escape_filter_value(logs['vmaf'])}")
        graph.append(head + body + ("" if last else f"[d{i + 1}]"))
    return ";".join(graph)


def _frame_time_base(rate):
    """``"30000/1001"`` -> ``"1001/30000"``: the time base of one frame at that rate."""
    num, _, den = rate.partition("/")
    return f"{den or 1}/{num}"


def pair_step(distorted, reference, *, metrics, model, subsample, ffmpeg_bin, vmaf_bin, log_path,
              ref_width, ref_height, fps, what, weight=1.0, expected_s=None):
    """The ``Step`` measuring ``distorted`` against ``reference``.

    :param distorted: absolute path of the distorted video, or a list of
        absolute paths read one after the other as one file (a rung's init
        and media segments: ffmpeg's ``concatf`` protocol, the list written
        to ``raw_logs(log_path)["list"]``).
    :param reference: absolute path of the reference (the source).
    :param metrics: list of ``"vmaf"``, ``"psnr"``, ``"ssim"``.
    :param model: libvmaf's built-in model (``"vmaf_v0.6.1"``...), used when
        ``"vmaf"`` is asked.
    :param subsample: libvmaf scores every ``subsample``-th frame (1 = all).
    :param ffmpeg_bin: the system ffmpeg (PSNR/SSIM only).
    :param vmaf_bin: the VMAF-capable ffmpeg (absolute path), or None; it
        runs the step whenever ``"vmaf"`` is asked.
    :param log_path: absolute path of libvmaf's JSON log; the other logs go
        beside it (``raw_logs``); its directory is created.
    :param ref_width, ref_height: the reference's display size, pixels.
    :param fps: the reference's frames per second (``Fraction``) or None.
    :param what: a few words for logs and errors.
    :param weight: the step's share of progress; ``expected_s``: seconds of
        ``-progress`` time at the end (the reference's duration).
    :raises PermanentJobError: ``"vmaf"`` asked but ``vmaf_bin`` is None
        (the sentence says how to install it).
    """
    metrics = list(metrics)
    if "vmaf" in metrics and not vmaf_bin:
        raise PermanentJobError(f"{what}: this worker has no VMAF-capable ffmpeg. {HOW_TO_ENABLE}")
    binary = vmaf_bin if "vmaf" in metrics else ffmpeg_bin
    common.make_parent(log_path)
    logs = raw_logs(log_path)
    for key in ("vmaf", "psnr", "ssim"):
        if os.path.exists(logs[key]):
            os.remove(logs[key])
    if isinstance(distorted, (list, tuple)):
        with open(logs["list"], "w") as f:
            f.write("".join(f"file:{os.path.abspath(p)}\n" for p in distorted))
        source_arg, readable = f"concatf:{logs['list']}", tuple(distorted) + (logs["list"],)
    else:
        source_arg, readable = distorted, (distorted,)
    graph = pair_graph(metrics=metrics, model=model, subsample=subsample, ref_width=ref_width,
                       ref_height=ref_height, fps=fps, log_path=log_path)
    argv = common.input_args(binary, source_arg, reference)
    argv += ["-filter_complex", graph, "-an", "-sn", "-dn", "-f", "null"] + common.progress_args("-")
    return Step(what=what, argv=argv, expected_s=expected_s, weight=weight,
                readable=readable + (reference,))


# --- reading the logs --------------------------------------------------------------------

def _printed(path, key):
    """``{frame index: float}`` from a ``metadata=mode=print:key=KEY`` file
    (``frame:N pts:... pts_time:...`` lines, each followed by ``KEY=value``)."""
    values, frame = {}, None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("frame:"):
                frame = int(line.split()[0][len("frame:"):])
            elif line.startswith(key + "=") and frame is not None:
                values[frame] = float(line.split("=", 1)[1])
    return values


def psnr_of_mse(mse):
    """PSNR in dB of a mean squared error of 8-bit samples; PSNR_MAX_DB for 0."""
    if mse <= 0:
        return PSNR_MAX_DB
    return min(PSNR_MAX_DB, 10.0 * math.log10(_PEAK * _PEAK / mse))


def percentile(values, p):
    """The ``p``-th percentile (0..100) of ``values`` (non-empty), linear
    interpolation between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def read_report(log_path, metrics):
    """``(pooled, frames)`` from the logs of a pair step run with ``log_path``.

    :returns: ``pooled``: ``{"vmaf": {"mean", "min", "harmonic_mean", "p1",
        "p5"}, "psnr_y": dB, "ssim": 0..1, "frames": int}`` (each metric only
        when in ``metrics``; see the module docstring); ``frames``: a list of
        ``{"frame": n, "vmaf", "psnr_y", "ssim"}`` ordered by frame.
    :raises PermanentJobError: a log is missing, unreadable, or holds no frame.
    """
    logs = raw_logs(log_path)
    per_frame, pooled = {}, {}
    try:
        if "psnr" in metrics:
            mse = _printed(logs["psnr"], PSNR_KEY)
            if not mse:
                raise ValueError("no frame in the PSNR log")
            for n, value in mse.items():
                per_frame.setdefault(n, {})["psnr_y"] = round(psnr_of_mse(value), 4)
            pooled["psnr_y"] = round(psnr_of_mse(sum(mse.values()) / len(mse)), 4)
        if "ssim" in metrics:
            ssim = _printed(logs["ssim"], SSIM_KEY)
            if not ssim:
                raise ValueError("no frame in the SSIM log")
            for n, value in ssim.items():
                per_frame.setdefault(n, {})["ssim"] = round(value, 6)
            pooled["ssim"] = round(sum(ssim.values()) / len(ssim), 6)
        if "vmaf" in metrics:
            with open(logs["vmaf"], encoding="utf-8") as f:
                doc = json.load(f)
            scores = {int(fr["frameNum"]): float(fr["metrics"]["vmaf"]) for fr in doc.get("frames") or ()}
            if not scores:
                raise ValueError("no frame in the VMAF log")
            pool = doc["pooled_metrics"]["vmaf"]
            for n, value in scores.items():
                per_frame.setdefault(n, {})["vmaf"] = round(value, 4)
            values = list(scores.values())
            pooled["vmaf"] = {"mean": round(float(pool["mean"]), 4), "min": round(float(pool["min"]), 4),
                              "harmonic_mean": round(float(pool["harmonic_mean"]), 4),
                              "p1": round(percentile(values, 1), 4), "p5": round(percentile(values, 5), 4)}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PermanentJobError(f"the quality measurement left no usable log "
                                f"({os.path.basename(log_path)}): {e}") from None
    pooled["frames"] = len(per_frame)
    frames = [{"frame": n, **per_frame[n]} for n in sorted(per_frame)]
    return pooled, frames


def read_log(log_path, metrics):
    """The pooled figures (``read_report``'s first item) of the pair step run
    with ``log_path``. :raises PermanentJobError: as ``read_report``."""
    return read_report(log_path, metrics)[0]


def settings_of(quality):
    """The measurement settings of a ``quality`` (or compare) spec as stored
    in a report: ``{"metrics", "model", "subsample"}`` (``model`` None
    without VMAF)."""
    metrics = [m for m in ("vmaf", "psnr", "ssim") if m in quality["metrics"]]
    return {"metrics": metrics, "model": quality["model"] if "vmaf" in metrics else None,
            "subsample": int(quality.get("subsample") or 1)}


def write_report(path, settings, pooled, frames):
    """Write the per-frame report (JSON, see the module docstring) at ``path``."""
    common.make_parent(path)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({**settings, "pooled": pooled, "frames": frames}, f, separators=(",", ":"))


def _report_file(rel, work_dir):
    local = common.local_path(work_dir, rel)
    return OutputFile(path=rel, local=local, bytes=os.path.getsize(local),
                      content_type=content_type_for_name(rel), role=MEDIA)


# --- an output's measurement: plan and finish ----------------------------------------------

class _Item:
    """One pair to measure: ``label`` (a rung's name, or None for an mp4),
    ``distorted`` (path or list of paths), ``report`` (relative path of the
    report), ``log`` (absolute raw log path), ``rung`` (a ladder rung's
    info, else None), ``fresh`` (a report with the same settings exists
    already: a sibling output sharing the segments measured it)."""

    def __init__(self, label, distorted, report, log, rung=None):
        self.label, self.distorted, self.report, self.log, self.rung = label, distorted, report, log, rung
        self.fresh = False


def _template_pattern(template):
    """A regex of a segment name template (``package.INIT_SEG_NAME``, ...):
    ``$RepresentationID$`` -> group ``rep``, ``$Number%05d$`` -> group ``num``."""
    parts = re.split(r"\$(RepresentationID|Number%05d)\$", template)
    out = ""
    for i, part in enumerate(parts):
        if i % 2 == 0:
            out += re.escape(part)
        else:
            out += r"(?P<rep>\d+)" if part == "RepresentationID" else r"(?P<num>\d+)"
    return re.compile(out + r"\Z")


def rung_segments(spec, result):
    """A ladder result's video rungs: ``[(rung info, [init, media segments...]
    local paths in order)]`` in the order of ``result.info["rungs"]``.
    Representations are told apart by the segment names of
    ``nommer.workerd.outputs.package``; a video one by its init segment's
    track. :raises PermanentJobError: the segments do not match the rungs."""
    from nommer.workerd.outputs import mp4, package

    init_re, media_re = _template_pattern(package.INIT_SEG_NAME), _template_pattern(package.MEDIA_SEG_NAME)
    prefix = os.path.normpath(spec["dir"]).replace(os.sep, "/") + "/"
    inits, media = {}, {}
    for f in result.files:
        if not f.path.startswith(prefix) or "/" in f.path[len(prefix):]:
            continue
        name = f.path[len(prefix):]
        m = init_re.match(name)
        if m:
            inits[int(m.group("rep"))] = f.local
            continue
        m = media_re.match(name)
        if m:
            media.setdefault(int(m.group("rep")), []).append((int(m.group("num")), f.local))
    videos = []
    for rep in sorted(inits):
        try:
            track = mp4.read_video_track(inits[rep])
        except (OSError, ValueError) as e:
            raise PermanentJobError(f"the init segment of representation {rep} cannot be read: {e}") from None
        if track is not None:
            videos.append([inits[rep]] + [path for _, path in sorted(media.get(rep, ()))])
    rungs = list(result.info.get("rungs") or ())
    if len(rungs) != len(videos) or any(len(v) < 2 for v in videos):
        raise PermanentJobError(f"the ladder in {prefix} has {len(videos)} video representations with "
                                f"segments for {len(rungs)} rungs: nothing to measure")
    return list(zip(rungs, videos))


def _existing_settings(path):
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        return {k: doc.get(k) for k in ("metrics", "model", "subsample")}
    except (OSError, ValueError, AttributeError):
        return None


def _items(spec, result, work_dir):
    """The pairs of an output (``_Item`` list): its MP4, or each rung of its ladder."""
    settings = settings_of(spec["quality"])
    raw = os.path.join(work_dir, RAW_DIR)
    if spec["type"] == "mp4":
        name = spec["name"]
        local = next((f.local for f in result.files if f.path == name), common.local_path(work_dir, name))
        return [_Item(None, local, name + REPORT_SUFFIX, os.path.join(raw, name + ".vmaf.json"))]
    items = []
    dir_rel = os.path.normpath(spec["dir"]).replace(os.sep, "/")
    for rung, paths in rung_segments(spec, result):
        report = f"{dir_rel}/{rung['name']}{REPORT_SUFFIX}"
        existing = _existing_settings(common.local_path(work_dir, report))
        if existing is not None and existing != settings:
            # The hls or dash sibling sharing these segments measured them otherwise.
            report = f"{dir_rel}/{rung['name']}.{spec['type']}{REPORT_SUFFIX}"
        item = _Item(rung["name"], paths, report,
                     os.path.join(raw, report[:-len(REPORT_SUFFIX)] + ".vmaf.json"), rung)
        item.fresh = (_existing_settings(common.local_path(work_dir, report)) == settings
                      and os.path.exists(item.log if "vmaf" in settings["metrics"]
                                         else raw_logs(item.log)[settings["metrics"][0]]))
        items.append(item)
    return items


def plan(spec, source, result, *, ffmpeg_bin, vmaf_bin, input_path, work_dir):
    """The runs measuring an mp4, hls or dash output (``spec``, with a
    ``quality`` field) against the source, after its builder's ``finish``
    gave ``result`` (its ``OutputResult``): one ``pair_step`` for the MP4,
    or per rung of the ladder (none for a rung an hls/dash sibling sharing
    the segments already measured with the same settings).

    :raises PermanentJobError: the source has no video; the mp4 is an audio
        merge (``image_path``: nothing of the source's video to compare
        with); VMAF asked without ``vmaf_bin`` (the sentence says how to
        install it); a ladder's segments do not match its rungs.
    """
    what = f"{spec['type']} {spec.get('name') if spec['type'] == 'mp4' else spec.get('dir') + '/'}"
    if not source.has_video:
        raise PermanentJobError(f"quality of {what}: the source has no video to measure against")
    if spec["type"] == "mp4" and spec.get("image_path"):
        raise PermanentJobError(f"quality of {what}: an audio merge (image_path) shows a still "
                                "image, not the source's video; there is nothing to measure")
    quality = spec["quality"]
    settings = settings_of(quality)
    if "vmaf" in settings["metrics"] and not vmaf_bin:
        raise PermanentJobError(f"quality of {what}: this worker has no VMAF-capable ffmpeg. {HOW_TO_ENABLE}")
    duration = source.duration_s or 1.0
    weight = duration * source.width * source.height / 1e6
    steps = []
    for item in _items(spec, result, work_dir):
        if item.fresh:
            continue
        label = f"quality {what}" + (f" rung {item.label}" if item.label else "")
        steps.append(pair_step(item.distorted, input_path, metrics=settings["metrics"],
                               model=quality["model"], subsample=settings["subsample"],
                               ffmpeg_bin=ffmpeg_bin, vmaf_bin=vmaf_bin, log_path=item.log,
                               ref_width=source.width, ref_height=source.height, fps=source.fps,
                               what=label, weight=weight, expected_s=source.duration_s))
    return steps


def finish(spec, source, result, steps, work_dir):
    """After ``plan``'s steps ran: read each pair's logs, write its report
    (``write_report``) and return ``result`` with the reports added to its
    files and ``quality`` added to its info (the pooled figures and
    ``log`` for an mp4; ``{"rungs": [...]}`` for a ladder, see the module
    docstring). :raises PermanentJobError: a log is missing or unreadable."""
    settings = settings_of(spec["quality"])
    files, per_rung = list(result.files), []
    pooled = None
    for item in _items(spec, result, work_dir):
        pooled, frames = read_report(item.log, settings["metrics"])
        write_report(common.local_path(work_dir, item.report), settings, pooled, frames)
        files.append(_report_file(item.report, work_dir))
        if item.rung is not None:
            per_rung.append({"name": item.rung["name"], "width": item.rung.get("width"),
                             "height": item.rung.get("height"), **pooled, "log": item.report})
    if spec["type"] == "mp4":
        info = {**pooled, "log": spec["name"] + REPORT_SUFFIX}
    else:
        info = {"rungs": per_rung}
    return OutputResult(files=files, info={**result.info, "quality": info})
