"""OutputsNommer: a declarative job's outputs (ladders, files, pictures, audio).

``job.job_options`` is ``{"outputs": [normalized outputs], "preset": name or
None, "single_file": bool}`` (``nommer.core.outputs``: every field of each
output spelled out). ``run()``:

1. checks the outputs again (the worker trusts nothing it did not check);
2. DOWNLOADING (stored by the worker): fetches the source, and each mp4
   output's ``image_path`` (the audio merge), into the scratch dir; probes
   them (an image that is not a still image is a ``PermanentJobError``);
3. ENCODING: asks each output's builder (``nommer.workerd.outputs``) for its
   ffmpeg runs, hls and dash outputs that share a directory and a ladder
   grouped into one run (one set of CMAF segments), and runs them one after
   the other in the sandbox (``ffmpeg_run.FFmpegRun``), with ``-t`` capped
   at MAX_OUTPUT_DURATION_FACTOR x the source's duration; progress is one
   monotonic percentage over every run (``outputs.progress``), then the
   upload; then each builder finishes its output (manifests from measured
   segments, storyboard VTT...);
4. checks every file is a regular file (nothing sandboxed ffmpeg could turn
   into a symlink out of the scratch dir) and that together they stay under
   MAX_OUTPUT_BYTES;
5. UPLOADING: stores the files under the destination prefix, media first and
   manifests last; if one fails, deletes what it stored (``outputs.upload``);
6. returns ``{"outputs": [one entry per requested output: type, its name or
   dir, files [{path, bytes, content_type}], file_count, bytes, and the
   builder's info (rungs, audio, tiles...)], "source": probe summary,
   "size_bytes": total}``.

Errors as ``FFmpegNommer``'s (``PermanentJobError``, ``TransientJobError``,
``NoScratchSpace``, ``JobCanceled``).
"""

import os
from importlib import import_module

from twisted.internet import threads

from nommer.core.errors import InvalidJobSpec, PermanentJobError
from nommer.core.spec import OUTPUT_INPUT_FIELDS
from nommer.core.states import JobState
from nommer.core.uri import redact_uri
from nommer.workerd import probe
from nommer.core.chunking import all_finished
from nommer.workerd.nommers.base import BaseNommer
from nommer.workerd.nommers.chunked import ChunkedOutputs
from nommer.workerd.nommers.ffmpeg import max_output_duration_s, sandboxed_output_size
from nommer.workerd.nommers.ffmpeg_run import FFmpegRun
from nommer.workerd.outputs import (audio, mp4, package, poster, source as source_info,
                                    storyboard, thumbnails, upload)
from nommer.workerd.outputs.progress import WeightedProgress
from nommer.workerd.outputs.step import OutputResult

#: The builder module of each output type but the ladders (``package``);
#: a name is imported when a job first needs it.
BUILDERS = {"mp4": mp4, "poster": poster, "thumbnails": thumbnails,
            "storyboard": storyboard, "audio": audio,
            "captions": "nommer.workerd.outputs.captions", "compare": "nommer.workerd.outputs.compare"}
#: The keyword the local path of an output's other input
#: (``spec.OUTPUT_INPUT_FIELDS``, fetched beside the source) is given to the
#: builder's ``plan`` as.
INPUT_KEYWORDS = {"image_path": "image_input", "distorted": "distorted_input"}
LADDER_TYPES = ("hls", "dash")
#: Most files one output lists in the job document (a long ladder has
#: thousands of segments; the job store's item stays small). ``file_count``
#: and ``bytes`` always count them all.
MAX_LISTED_FILES = 200
#: The spec fields that name where an output goes, shown in its entry.
_NAMING_FIELDS = ("name", "dir")


def _work(spec_key, k):
    return f"{spec_key}{k}"


class _Unit:
    """What one builder call covers: one output, or a ladder package (the
    hls and dash outputs sharing one set of segments). ``indexes`` are the
    positions of its outputs in the job's list; ``info`` what a refinement
    (target quality) adds to the outputs' info; ``slots`` its steps' places
    in the job's progress."""

    def __init__(self, builder, spec, indexes):
        self.builder = builder
        self.spec = spec
        self.indexes = indexes
        self.steps = []
        self.info = {}
        self.slots = []
        self.encoded = None  # a chunked job's joined video: (paths in track order, offset_s)


def plan_units(outputs):
    """Group the job's ``outputs`` into ``_Unit`` s: ladders by
    ``package.group_key``, every other output alone; in the job's order."""
    units, packages = [], {}
    for i, spec in enumerate(outputs):
        if spec["type"] in LADDER_TYPES:
            key = package.group_key(spec)
            unit = packages.get(key)
            if unit is None:
                unit = packages[key] = _Unit(package, {"hls": None, "dash": None}, [])
                units.append(unit)
            unit.spec[spec["type"]] = spec
            unit.indexes.append(i)
        else:
            builder = BUILDERS[spec["type"]]
            units.append(_Unit(import_module(builder) if isinstance(builder, str) else builder, spec, [i]))
    return units


def entry_for(spec, result):
    """The job document's entry of one output: its type and naming fields,
    the builder's info, its files (at most MAX_LISTED_FILES listed)."""
    entry = {"type": spec["type"]}
    entry.update({k: spec[k] for k in _NAMING_FIELDS if k in spec})
    entry.update(result.info)
    files = sorted(result.files, key=lambda f: f.path)
    entry["files"] = [{"path": f.path, "bytes": f.bytes, "content_type": f.content_type}
                      for f in files[:MAX_LISTED_FILES]]
    entry["file_count"] = len(files)
    entry["bytes"] = sum(f.bytes for f in files)
    if len(files) > MAX_LISTED_FILES:
        entry["files_truncated"] = True
    return entry


def directories_under(top):
    """``top`` and every directory below it (absolute paths; symlinks not
    followed): where a builder's ffmpeg writes."""
    found = [top]
    for parent, dirs, _ in os.walk(top):
        found.extend(os.path.join(parent, d) for d in dirs)
    return found


def _target_of(unit):
    """The ``target`` (target quality) a unit asks for, or None."""
    specs = [unit.spec.get("hls"), unit.spec.get("dash")] if unit.builder is package else [unit.spec]
    return next((s["target"] for s in specs if s and s.get("target")), None)


def _with_info(result, info):
    """``result`` with ``info`` (a refinement's: probe history) merged into its info."""
    if not info:
        return result
    return OutputResult(files=result.files, info={**result.info, **info})


class _Job:
    """What the phases of one run share: the local source and its probe,
    the other inputs, the work dir, names safe to show, the ``-t`` cap
    (``max_duration``, seconds: ``max_duration_factor`` x the source's)."""

    def __init__(self, *, source_path, probed, inputs, work_dir, names, max_duration_factor):
        self.source_path = source_path
        self.probed = probed
        self.source = source_info.from_probe(probed)
        self.max_duration = max_output_duration_s(self.source.duration_s, max_duration_factor)
        self.kinds = {s.get("codec_type") for s in probed["streams"] if isinstance(s, dict)}
        self.inputs = inputs
        self.work_dir = work_dir
        self.names = names


def _check_files(files):
    """Each file a regular file (``sandboxed_output_size``); total bytes."""
    return sum(sandboxed_output_size(f.local) for f in files)


class OutputsNommer(ChunkedOutputs, BaseNommer):
    """Makes a declarative job's outputs (see the module docstring; a
    chunked job's plan, chunks and merge: ``chunked``)."""

    @classmethod
    def validate_options(cls, options, settings, *, dest_path=None):
        """``{"outputs": normalized list, "preset": str or None,
        "single_file": bool}`` or ``InvalidJobSpec`` (field
        ``job_options.options...``). ``settings`` is not used."""
        from nommer.core.outputs.validate import validate_outputs

        if not isinstance(options, dict) or not isinstance(options.get("outputs"), list):
            raise InvalidJobSpec("job_options.options", "must be an object with an 'outputs' list")
        outputs = validate_outputs(options["outputs"], field="job_options.options.outputs")
        single = bool(options.get("single_file"))
        if single and len(outputs) != 1:
            raise InvalidJobSpec("job_options.options.single_file", "needs exactly one output")
        preset = options.get("preset")
        chunking = options.get("chunking")
        return {"outputs": outputs, "preset": preset if isinstance(preset, str) else None,
                "single_file": single, "chunking": chunking if isinstance(chunking, dict) else None}

    def __init__(self, job, context):
        super().__init__(job, context)
        self._run = None

    def on_cancel(self):
        if self._run is not None:
            self._run.terminate()

    def _in_thread(self, f, *args):
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f, *args)

    async def run(self):
        """Download, probe, refine, encode, finish, measure, check, upload;
        return the output info (see the module docstring)."""
        try:
            options = self.validate_options(self.job.job_options, self.settings)
        except InvalidJobSpec as e:
            raise PermanentJobError(f"invalid job options: {e.message}") from e
        outputs = options["outputs"]
        # A chunked job's merge (or a planner run again) reads the copy its chunks shared.
        job = await self._prepare(outputs, cached=(self._work_area(), None) if self.job.chunks else None)
        units = plan_units(outputs)
        chunked = self._chunked_units(units, job.source, options)
        merging = bool(chunked) and all_finished(self.job.chunks)
        if chunked and not merging:
            await self.set_state(JobState.ENCODING)
            self.context.report_progress(0.0)
            await self._plan_chunks(job, units, chunked, options["chunking"])  # ChunksQueued, or one chunk
            chunked = {}
        if merging:
            for pos, encoded in (await self._join_chunks(job, units, chunked)).items():
                units[pos].encoded = encoded
        report = self._merge_progress if merging else self.context.report_progress
        # A target's search adds quality (the achieved score is measured): measured too.
        quality_outputs = [i for i, spec in enumerate(outputs) if spec.get("quality") or spec.get("target")]
        vmaf_bin = await self._vmaf_bin(outputs)

        await self.set_state(JobState.ENCODING)
        report(0.0)
        # The job's progress: a slot per target-quality search, per encode
        # step (a refined unit's steps share one: they are planned later),
        # per quality measurement.
        refining = [u for u in units if _target_of(u)]
        for unit in units:
            if unit not in refining:
                unit.steps = self._plan(unit, job, vmaf_bin)
        planned = [s.weight for u in units for s in u.steps]
        typical = (sum(planned) / len(planned)) if planned else 1.0
        weights = []

        def slot(weight):
            weights.append(weight)
            return len(weights) - 1
        searches = {id(u): slot(typical * 1.5) for u in refining}
        for unit in units:
            unit.slots = [slot(typical)] if unit in refining else [slot(s.weight) for s in unit.steps]
        measures = {i: slot(typical) for i in quality_outputs}
        meter = WeightedProgress(weights, report)

        for unit in refining:
            k = searches[id(unit)]
            target = import_module("nommer.workerd.outputs.target")
            unit.spec, unit.info = await target.refine(
                unit.spec, job.source, run=self._runner(job), report=lambda f, k=k: meter.step(k, f),
                ffmpeg_bin=self.settings.FFMPEG_BIN, vmaf_bin=vmaf_bin, input_path=job.source_path,
                work_dir=job.work_dir)
            for i in unit.indexes:  # the refined spec (crf or ladder, quality) is the output's now
                outputs[i] = unit.spec[outputs[i]["type"]] if unit.builder is package else unit.spec
            unit.steps = self._plan(unit, job, vmaf_bin)
        for unit in units:
            for n, step in enumerate(unit.steps):
                await self._run_step(job, step, on_fraction=self._share(meter, unit, n))

        results = await self._finish_units(units, outputs, job)
        if merging:
            await self._check_audio(job, units, chunked)
        for i in quality_outputs:
            results[i] = await self._measure(outputs[i], results[i], job, vmaf_bin,
                                             report=lambda f, k=measures[i]: meter.step(k, f))
        stored = await self._store(options, outputs, results, job, meter)
        if merging:
            await self._delete_checkpoints()
        return stored

    @staticmethod
    def _share(meter, unit, n):
        """The progress callback of the unit's step ``n``: its own slot, or,
        when the unit's steps share one (a refined unit), its part of it by weight."""
        if len(unit.slots) == len(unit.steps):
            return lambda f, k=unit.slots[n]: meter.step(k, f)
        total = sum(s.weight for s in unit.steps) or 1.0
        before = sum(s.weight for s in unit.steps[:n])
        weight = unit.steps[n].weight
        return lambda f, k=unit.slots[0]: meter.step(k, (before + weight * f) / total)

    async def _prepare(self, outputs, cached=None, inputs=True):
        """DOWNLOADING: fetch and probe the source and (``inputs``) the
        outputs' other inputs; the job's ``_Job`` (paths, probe, work dir).
        ``cached``: a chunked job's ``(WorkArea, name)``: the source is this
        machine's shared copy (``chunks.source_cache``) of that file of the
        work area (a remuxed source), or of the job's source when ``name``
        is None."""
        source_name = redact_uri(self.job.source_path)
        if cached is not None:
            area, name = cached

            async def download(local):
                self.check_canceled()
                if name:
                    await area.get(name, local)
                else:
                    await self.context.download_source(local)
            source_path = await self.context.worker.scratch.sources.fetch(
                self.job.job_id, self.job.retries, name or "source", download)
        else:
            source_path = await self.download_source("source")
        probed = await probe.ffprobe(self.reactor, self.settings, source_path, what="source",
                                     display_name=source_name)
        self.check_canceled()
        inputs = await self._fetch_inputs(outputs) if inputs else {}
        work_dir = self.scratch_path("out")
        os.makedirs(work_dir, exist_ok=True)
        return _Job(source_path=source_path, probed=probed, inputs=inputs, work_dir=work_dir,
                    names={source_path: source_name, work_dir: "output"},
                    max_duration_factor=self.settings.MAX_OUTPUT_DURATION_FACTOR)

    def _plan(self, unit, job, vmaf_bin):
        """The unit's builder's steps (its other inputs given as keywords:
        ``image_input``, ``distorted_input``; ``vmaf_bin``)."""
        extra = {}
        for i in unit.indexes:
            for field, keyword in INPUT_KEYWORDS.items():
                if (i, field) in job.inputs:
                    extra[keyword] = job.inputs[(i, field)]
        if unit.spec.get("type") == "compare":
            extra["vmaf_bin"] = vmaf_bin
        if unit.encoded is not None:  # a chunked job's joined video
            extra["encoded_videos" if unit.builder is package else "encoded_video"] = (
                unit.encoded if unit.builder is package else (unit.encoded[0][0], unit.encoded[1]))
        return unit.builder.plan(unit.spec, job.source, ffmpeg_bin=self.settings.FFMPEG_BIN,
                                 input_path=job.source_path, work_dir=job.work_dir, **extra)

    async def _vmaf_bin(self, outputs):
        """The VMAF-capable ffmpeg when an output asks for VMAF (None
        otherwise, or when none is installed: the builders then say so).
        Looked up in a thread: the first lookup runs ``ffmpeg -filters``."""
        from nommer.core.outputs.validate import vmaf_field

        if not any(vmaf_field(spec, "outputs") for spec in outputs):
            return None
        find = import_module("nommer.workerd.outputs.vmaf").find_vmaf_ffmpeg
        return await self._in_thread(find, self.settings)

    def _runner(self, job):
        """``await run(steps, on_fraction=None)``: run steps in the sandbox
        (for builders that decide their next step from the last one's
        result: the target-quality search)."""
        async def run(steps, on_fraction=None):
            for step in steps:
                await self._run_step(job, step, on_fraction=on_fraction)
        return run

    async def _run_step(self, job, step, on_fraction=None, readable=(), capped=None):
        """Run one ``Step`` in the sandbox, ``-t`` capped (unless ``capped``
        is False: a run bounded otherwise, with several outputs);
        ``readable``: more paths it reads, besides the step's own."""
        argv = list(step.argv)
        if job.max_duration is not None and (step.capped if capped is None else capped):
            argv = argv[:-1] + ["-t", f"{job.max_duration:.3f}"] + argv[-1:]
        self.log.info("job {job_id}: {what}: {argv}", job_id=self.job.job_id, what=step.what,
                      argv=" ".join(argv))
        self.check_canceled()
        self._run = FFmpegRun(self.reactor, self.settings, self.job.job_id, argv,
                              scratch_dir=self.context.scratch_dir,
                              readable=[job.source_path, *step.readable, *readable],
                              expected_s=step.expected_s,
                              on_fraction=on_fraction, names=job.names, source_kinds=job.kinds,
                              where=f"{os.path.basename(argv[0])} ({step.what})",
                              work_dirs=directories_under(job.work_dir))
        try:
            await self._run.run()
        finally:
            self._run = None
        if on_fraction is not None:
            on_fraction(1.0)

    async def _finish_units(self, units, outputs, job):
        """Each unit's ``finish`` (in a thread): every other output first,
        then the ladders, which are given the captions made (subtitles
        renditions). ``{output index: OutputResult}``."""
        results = {}
        ordered = [u for u in units if u.builder is not package] + [u for u in units if u.builder is package]
        for unit in ordered:
            if unit.builder is package:
                subtitles = [results[i] for i in sorted(results) if outputs[i]["type"] == "captions"]
                extra = {"subtitles": subtitles} if subtitles else {}
                made = await self._in_thread(lambda u=unit, e=extra: package.finish(
                    u.spec, job.source, u.steps, job.work_dir, **e))
                for i in unit.indexes:
                    results[i] = _with_info(made[outputs[i]["type"]], unit.info)
            else:
                made = await self._in_thread(unit.builder.finish, unit.spec, job.source, unit.steps,
                                             job.work_dir)
                results[unit.indexes[0]] = _with_info(made, unit.info)
            self.check_canceled()
        return results

    async def _measure(self, spec, result, job, vmaf_bin, report):
        """Quality metrics of one output against the source (its ``quality``
        field): ``nommer.workerd.outputs.quality``; the result with the
        per-frame log added to its files and the pooled figures to its info."""
        quality = import_module("nommer.workerd.outputs.quality")
        steps = quality.plan(spec, job.source, result, ffmpeg_bin=self.settings.FFMPEG_BIN,
                             vmaf_bin=vmaf_bin, input_path=job.source_path, work_dir=job.work_dir)
        total = sum(s.weight for s in steps) or 1.0
        done = 0.0
        for step in steps:
            await self._run_step(job, step, on_fraction=lambda f, d=done, w=step.weight: report((d + w * f) / total))
            done += step.weight
        return await self._in_thread(quality.finish, spec, job.source, result, steps, job.work_dir)

    async def _store(self, options, outputs, results, job, meter):
        """Check the files, store them (UPLOADING), return the output info."""
        files = [f for i in sorted(results) for f in results[i].files]
        ordered = upload.upload_order(files)
        total = await self._in_thread(_check_files, ordered)
        max_bytes = int(self.settings.MAX_OUTPUT_BYTES)
        if total > max_bytes:
            raise PermanentJobError(f"the outputs together are {total} bytes, more than MAX_OUTPUT_BYTES "
                                    f"({max_bytes} bytes): nothing uploaded")
        single = options["single_file"]
        if single and len(ordered) != 1:
            raise PermanentJobError("dest_path names one file but this output makes several: "
                                    "end dest_path with '/' to store them under it")

        await self.set_state(JobState.UPLOADING)

        async def store(f):
            return await self.context.upload_file(f.local, None if single else f.path)

        await upload.store_all(files, store, self.context.delete_stored,
                               on_stored=meter.uploaded, job_id=self.job.job_id)
        self.check_canceled()
        entries = [entry_for(outputs[i], results[i]) for i in sorted(results)]
        self.log.info("job {job_id}: {n} outputs, {files} files, {size_bytes} bytes", job_id=self.job.job_id,
                      n=len(entries), files=len(ordered), size_bytes=total)
        return {"outputs": entries, "source": probe.summarize(job.probed), "size_bytes": total}

    async def _fetch_inputs(self, outputs):
        """Download and check each output's other input (the fields feederd
        checked and sealed at submit, ``spec.OUTPUT_INPUT_FIELDS``: an mp4's
        ``image_path``, a compare's ``distorted``);
        ``{(output index, field): local path}``."""
        inputs = {}
        for i, spec in enumerate(outputs):
            for field in OUTPUT_INPUT_FIELDS.get(spec["type"], ()):
                if not spec.get(field):
                    continue
                local = self.scratch_path(f"input{i}-{field}")
                self.check_canceled()
                await self.context.download_input(f"outputs[{i}].{field}", spec[field], local)
                shown = redact_uri(spec[field])
                info = await probe.ffprobe(self.reactor, self.settings, local,
                                           what=f"{field} of output {i}", display_name=shown)
                if field == "image_path":
                    problem = mp4.describe_image_problem(info)
                    if problem:
                        raise PermanentJobError(
                            f"image_path of output {i} ({shown}) is not a still image: {problem}")
                inputs[(i, field)] = local
        return inputs
