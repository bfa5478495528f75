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

from twisted.internet import threads

from nommer.core.errors import InvalidJobSpec, PermanentJobError
from nommer.core.states import JobState
from nommer.core.uri import redact_uri
from nommer.workerd import probe
from nommer.workerd.nommers.base import BaseNommer
from nommer.workerd.nommers.ffmpeg import max_output_duration_s, sandboxed_output_size
from nommer.workerd.nommers.ffmpeg_run import FFmpegRun
from nommer.workerd.outputs import (audio, mp4, package, poster, source as source_info,
                                    storyboard, thumbnails, upload)
from nommer.workerd.outputs.progress import WeightedProgress

#: The builder module of each output type but the ladders (``package``).
BUILDERS = {"mp4": mp4, "poster": poster, "thumbnails": thumbnails,
            "storyboard": storyboard, "audio": audio}
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
    positions of its outputs in the job's list."""

    def __init__(self, builder, spec, indexes):
        self.builder = builder
        self.spec = spec
        self.indexes = indexes
        self.steps = []


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
            units.append(_Unit(BUILDERS[spec["type"]], spec, [i]))
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


def _check_files(files):
    """Each file a regular file (``sandboxed_output_size``); total bytes."""
    return sum(sandboxed_output_size(f.local) for f in files)


class OutputsNommer(BaseNommer):
    """Makes a declarative job's outputs (see the module docstring)."""

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
        return {"outputs": outputs, "preset": preset if isinstance(preset, str) else None,
                "single_file": single}

    def __init__(self, job, context):
        super().__init__(job, context)
        self._run = None

    def on_cancel(self):
        if self._run is not None:
            self._run.terminate()

    def _in_thread(self, f, *args):
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f, *args)

    async def run(self):
        """Download, probe, encode, finish, check, upload; return the output
        info (see the module docstring)."""
        job_id = self.job.job_id
        try:
            options = self.validate_options(self.job.job_options, self.settings)
        except InvalidJobSpec as e:
            raise PermanentJobError(f"invalid job options: {e.message}") from e
        outputs = options["outputs"]

        source_path = await self.download_source("source")
        source_name = redact_uri(self.job.source_path)
        probed = await probe.ffprobe(self.reactor, self.settings, source_path, what="source",
                                     display_name=source_name)
        self.check_canceled()
        source = source_info.from_probe(probed)
        kinds = {s.get("codec_type") for s in probed["streams"] if isinstance(s, dict)}
        images = await self._fetch_images(outputs)

        work_dir = self.scratch_path("out")
        os.makedirs(work_dir, exist_ok=True)
        units = plan_units(outputs)
        for unit in units:
            extra = {}
            if unit.builder is mp4 and unit.indexes[0] in images:
                extra["image_input"] = images[unit.indexes[0]]
            unit.steps = unit.builder.plan(unit.spec, source, ffmpeg_bin=self.settings.FFMPEG_BIN,
                                           input_path=source_path, work_dir=work_dir, **extra)

        await self.set_state(JobState.ENCODING)
        self.context.report_progress(0.0)
        steps = [step for unit in units for step in unit.steps]
        meter = WeightedProgress([s.weight for s in steps], self.context.report_progress)
        max_duration = max_output_duration_s(source.duration_s, self.settings.MAX_OUTPUT_DURATION_FACTOR)
        names = {source_path: source_name, work_dir: "output"}
        for k, step in enumerate(steps):
            argv = list(step.argv)
            if max_duration is not None:
                argv = argv[:-1] + ["-t", f"{max_duration:.3f}"] + argv[-1:]
            self.log.info("job {job_id}: {what}: {argv}", job_id=job_id, what=step.what, argv=" ".join(argv))
            self.check_canceled()
            self._run = FFmpegRun(self.reactor, self.settings, job_id, argv,
                                  scratch_dir=self.context.scratch_dir,
                                  readable=[source_path, *step.readable], expected_s=step.expected_s,
                                  on_fraction=lambda f, k=k: meter.step(k, f), names=names,
                                  source_kinds=kinds, where=f"ffmpeg ({step.what})",
                                  work_dirs=directories_under(work_dir))
            try:
                await self._run.run()
            finally:
                self._run = None
            meter.step(k, 1.0)

        results = {}
        for unit in units:
            made = await self._in_thread(unit.builder.finish, unit.spec, source, unit.steps, work_dir)
            if unit.builder is package:
                for i in unit.indexes:
                    results[i] = made[outputs[i]["type"]]
            else:
                results[unit.indexes[0]] = made
            self.check_canceled()
        files = [f for i in sorted(results) for f in results[i].files]
        total = await self._in_thread(_check_files, upload.upload_order(files))
        max_bytes = int(self.settings.MAX_OUTPUT_BYTES)
        if total > max_bytes:
            raise PermanentJobError(f"the outputs together are {total} bytes, more than MAX_OUTPUT_BYTES "
                                    f"({max_bytes} bytes): nothing uploaded")
        if options["single_file"] and len(upload.upload_order(files)) != 1:
            raise PermanentJobError("dest_path names one file but this output makes several: "
                                    "end dest_path with '/' to store them under it")

        await self.set_state(JobState.UPLOADING)
        single = options["single_file"]

        async def store(f):
            return await self.context.upload_file(f.local, None if single else f.path)

        await upload.store_all(files, store, self.context.delete_stored,
                               on_stored=meter.uploaded, job_id=job_id)
        self.check_canceled()
        entries = [entry_for(outputs[i], results[i]) for i in sorted(results)]
        self.log.info("job {job_id}: {n} outputs, {files} files, {size_bytes} bytes", job_id=job_id,
                      n=len(entries), files=len(upload.upload_order(files)), size_bytes=total)
        return {"outputs": entries, "source": probe.summarize(probed), "size_bytes": total}

    async def _fetch_images(self, outputs):
        """Download and check each mp4 output's ``image_path``; ``{output
        index: local path}``."""
        images = {}
        for i, spec in enumerate(outputs):
            if spec["type"] != "mp4" or not spec.get("image_path"):
                continue
            field = f"outputs[{i}].image_path"
            local = self.scratch_path(f"image{i}")
            self.check_canceled()
            await self.context.download_input(field, spec["image_path"], local)
            shown = redact_uri(spec["image_path"])
            info = await probe.ffprobe(self.reactor, self.settings, local, what=f"image_path of output {i}",
                                       display_name=shown)
            problem = mp4.describe_image_problem(info)
            if problem:
                raise PermanentJobError(f"image_path of output {i} ({shown}) is not a still image: {problem}")
            images[i] = local
        return images
