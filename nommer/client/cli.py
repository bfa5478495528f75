"""The ``nommer`` command: submit, watch, list and cancel encoding jobs (``nommer
watch`` prints the live event stream); list
the server's presets and print the job schema; list the workers; manage API
keys (``nommer keys``) and AWS resources (``nommer aws``).

``nommer submit SRC DEST/ --preset NAME`` names a server preset (``nommer
presets`` lists them, the four 2011 ones included), ``--outputs FILE`` sends
declarative outputs, ``--options FILE`` the 2011 job_options.

Every command that talks to feederd sends the API key given with
``--api-key`` or the environment variable NOMMER_API_KEY. ``nommer keys``
does not talk to feederd: it opens the key store the configuration names
(``--config``), so the first key can be made before any exists.
Those (``nommer keys``, ``nommer aws``) live in ``cli_admin``; the exit
codes and printing both use in ``cli_common``.

Exit codes: 0 success (for ``--wait`` and ``wait``: the job FINISHED);
1 the job ended in another final state; 2 feederd refused the request (a
missing or wrong API key too), the key store refused it, or the command line
is wrong; 3 feederd could not be reached; 4 ``wait --timeout`` ran out; 130
interrupted.
"""

import json
import os
import re
import sys
from pathlib import Path

import click
import tqdm

from nommer import __version__
from nommer.client.api import (
    API_KEY_ENV,
    DEFAULT_API_URL,
    APIError,
    ClientError,
    FINAL_STATE_NAMES,
    ConnectionFailed,
    InvalidInputError,
    NommerClient,
    WaitTimeout,
    job_options_from,
)
from nommer.client.cli_admin import aws, keys
from nommer.client.cli_common import (
    EXIT_API_ERROR, EXIT_INTERRUPTED, EXIT_NOT_FINISHED, EXIT_TIMEOUT, EXIT_UNREACHABLE, print_json,
    print_table)
from nommer.core.states import JobState

_STATE_NAMES = [s.value for s in JobState]
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def to_uri(path_or_uri):
    """A URI as is (``s3://``, ``http://``, ``file://``...); a local path as
    an absolute ``file://`` URI, relative to the current directory."""
    if _SCHEME.match(path_or_uri):
        return path_or_uri
    return Path(os.path.abspath(os.path.expanduser(path_or_uri))).as_uri()


class _Group(click.Group):
    """Turns the client's expected errors into one line on stderr and an exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ConnectionFailed as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(EXIT_UNREACHABLE)
        except APIError as e:
            click.echo(f"error: {e.message} ({e.error_code})", err=True)
            if e.hint:
                click.echo(e.hint, err=True)
            ctx.exit(EXIT_API_ERROR)
        except WaitTimeout as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(EXIT_TIMEOUT)
        except ClientError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(EXIT_API_ERROR)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--api", metavar="URL", envvar="NOMMER_API", default=DEFAULT_API_URL,
              show_default=True, help="feederd's base URL (env NOMMER_API).")
@click.option("--api-key", metavar="KEY", envvar=API_KEY_ENV,
              help=f"API key sent to feederd (env {API_KEY_ENV}; prefer the variable: "
                   "a command line is visible to other users of the machine).")
@click.version_option(__version__, prog_name="nommer")
@click.pass_context
def cli(ctx, api, api_key):
    """Submit encoding jobs to feederd and follow them."""
    try:
        ctx.obj = NommerClient(api, api_key=api_key or "")
    except InvalidInputError:
        if ctx.invoked_subcommand not in _LOCAL_COMMANDS:
            raise
        ctx.obj = None


#: Commands that never talk to feederd (a malformed --api-key does not stop them).
_LOCAL_COMMANDS = ("keys", "aws")


# --- progress ---------------------------------------------------------------


class _Progress:
    """Shows a job's progress while it is waited on: a tqdm bar (0..100,
    described by the state) when stderr is a terminal, otherwise one line per
    state change, so logs stay readable."""

    def __init__(self, file=None):
        self.file = file if file is not None else sys.stderr
        self.bar = None
        self._last = None
        if _isatty(self.file):
            self.bar = tqdm.tqdm(total=100, file=self.file, desc="waiting", leave=True,
                                 bar_format="{desc:<12}{percentage:3.0f}%|{bar}| [{elapsed}]")

    def __call__(self, job):
        state = job.get("job_state") or "?"
        progress = job.get("progress")
        if self.bar is not None:
            if state == JobState.FINISHED.value:
                progress = 100
            self.bar.set_description_str(state, refresh=False)
            self.bar.n = max(0.0, min(100.0, float(progress or 0)))
            self.bar.refresh()
        elif state != self._last:
            click.echo(f"{state} {_pct(progress)}", file=self.file)
        self._last = state

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _pct(progress):
    try:
        return f"{float(progress):.0f}%"
    except (TypeError, ValueError):
        return "-"


def _isatty(f):
    try:
        return f.isatty()
    except (AttributeError, ValueError):
        return False


def _wait_and_report(client, job_id, poll_s, timeout_s, as_json):
    """Wait for the job with a progress display, print the outcome, exit 0
    for FINISHED and 1 for any other final state."""
    progress = _Progress()
    try:
        job = client.wait(job_id, poll_interval_s=poll_s, timeout_s=timeout_s,
                          on_update=progress)
    except KeyboardInterrupt:
        progress.close()
        click.echo(f"\nstopped waiting; job {job_id} goes on "
                   f"(`nommer cancel {job_id}` stops it)", err=True)
        click.get_current_context().exit(EXIT_INTERRUPTED)
    finally:
        progress.close()
    if as_json:
        print_json(job)
    else:
        state = job["job_state"]
        details = job.get("job_state_details")
        click.echo(state + (f": {details}" if details else ""))
        if state == JobState.FINISHED.value:
            click.echo(f"output: {job.get('dest_path')}")
    click.get_current_context().exit(
        0 if job["job_state"] == JobState.FINISHED.value else EXIT_NOT_FINISHED)


_poll_option = click.option("--poll", "poll_s", type=click.FloatRange(min=0), default=1.0,
                            show_default=True, metavar="SECONDS",
                            help="Seconds between two status polls.")


# --- commands ---------------------------------------------------------------


def parse_override(text):
    """``"key=value"`` -> ``(key, value)``: the value as JSON when it parses
    (``segment_s=4`` -> 4, ``iframes=false`` -> False), else the string
    itself (``codec=hevc``). Raises ``ValueError`` without ``=`` or with
    an empty key."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"{text!r} is not KEY=VALUE")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _overrides_callback(ctx, param, values):
    if not values:
        return None
    overrides = {}
    for text in values:
        try:
            key, value = parse_override(text)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
        overrides[key] = value
    return overrides


def _read_json_file(value):
    """The JSON in file ``value`` (``-``: standard input)."""
    with click.open_file(value, encoding="utf-8") as f:
        return json.load(f)


def _outputs_callback(ctx, param, value):
    if value is None:
        return None
    try:
        outputs = _read_json_file(value)
    except OSError as e:
        raise click.BadParameter(f"cannot read {value}: {e.strerror}") from None
    except ValueError as e:  # JSONDecodeError is a ValueError
        raise click.BadParameter(f"{value}: {e}") from None
    if isinstance(outputs, dict) and isinstance(outputs.get("outputs"), list):
        outputs = outputs["outputs"]  # a whole job body's outputs
    if not isinstance(outputs, list):
        raise click.BadParameter(f"{value}: expected a JSON list of outputs, each an object with a type")
    return outputs


def _options_callback(ctx, param, value):
    if value is None:
        return None
    try:
        with open(value, encoding="utf-8") as f:
            return job_options_from(json.load(f))
    except OSError as e:
        raise click.BadParameter(f"cannot read {value}: {e.strerror}") from None
    except ValueError as e:  # JSONDecodeError is a ValueError
        raise click.BadParameter(f"{value}: {e}") from None


@cli.command(short_help="Submit an encoding job.")
@click.argument("src")
@click.argument("dest")
@click.option("--preset", metavar="NAME", help="A server preset (see `nommer presets`).")
@click.option("--override", "overrides", metavar="KEY=VALUE", multiple=True, callback=_overrides_callback,
              help="With --preset: set an output field of the preset (repeatable); VALUE is read as "
                   "JSON when it parses (4, false, \"4\"), else as a string.")
@click.option("--outputs", "outputs", metavar="FILE", callback=_outputs_callback,
              help="A JSON file (- for stdin): a list of outputs (see `nommer schema`).")
@click.option("--options", "file_options", metavar="FILE", callback=_options_callback,
              help="A JSON file: a 2011 job_options object or a list of FFmpeg passes.")
@click.option("--notify-url", metavar="URL", help="POSTed to on every state change.")
@click.option("--priority", type=click.IntRange(0, 100), metavar="N",
              help="0..100, higher runs first (default 50).")
@click.option("--pool", metavar="NAME", help="The pool of workers that runs it (server setting POOLS).")
@click.option("--chunk-s", type=click.FloatRange(1, 3600), metavar="SECONDS",
              help="Split the source into chunks of about SECONDS, encoded by many workers, then merged.")
@click.option("--no-chunking", is_flag=True, help="Encode the source whole, however long it is.")
@click.option("--wait", "wait_", is_flag=True, help="Follow the job until it ends.")
@_poll_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def submit(client, src, dest, preset, overrides, outputs, file_options, notify_url, priority, pool, chunk_s,
           no_chunking, wait_, poll_s, as_json):
    """Encode SRC into DEST (local paths or URIs: file://, http(s)://, s3://).
    A DEST ending in / is a prefix every output file goes under.

    Prints the job id; with --wait, follows it and exits 0 if it FINISHED,
    1 otherwise.
    """
    if sum(v is not None for v in (preset, outputs, file_options)) != 1:
        raise click.UsageError("give exactly one of --preset NAME, --outputs FILE and --options FILE")
    if overrides is not None and preset is None:
        raise click.UsageError("--override goes with --preset")
    if chunk_s is not None and no_chunking:
        raise click.UsageError("give --chunk-s or --no-chunking, not both")
    chunking = {"target_s": chunk_s} if chunk_s is not None else (False if no_chunking else None)
    dest_uri = to_uri(dest)
    if dest.endswith("/") and not dest_uri.endswith("/"):
        dest_uri += "/"  # a local directory stays a prefix
    job_id = client.submit(to_uri(src), dest_uri, file_options, notify_url=notify_url, outputs=outputs,
                           preset=preset, overrides=overrides, priority=priority, pool=pool,
                           chunking=chunking)
    if as_json and not wait_:
        print_json({"job_id": job_id})
    elif not as_json:
        click.echo(job_id)
    if wait_:
        _wait_and_report(client, job_id, poll_s, None, as_json)


@cli.command()
@click.argument("job_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@click.pass_obj
def status(client, job_id, as_json):
    """Show one job."""
    job = client.get(job_id)
    if as_json:
        print_json(job)
        return
    fields = ["job_id", "job_state", "job_state_details", "progress", "source_path",
              "dest_path", "notify_url", "nommer", "attempts", "worker_id",
              "created_at", "started_at", "updated_at", "finished_at"]
    width = max(map(len, fields))
    for key in fields:
        value = job.get(key)
        if value is None:
            continue
        if key == "progress":
            value = _pct(value)
        click.echo(f"{key:<{width}}  {value}")
    if job.get("preset"):
        click.echo(f"{'preset':<{width}}  {job['preset']}")
    if job.get("outputs"):
        for output in job["outputs"]:
            click.echo(f"{'outputs':<{width}}  {_describe_output(output)}")
    elif job.get("output"):
        click.echo(f"{'output':<{width}}  {json.dumps(job['output'])}")


def _describe_output(output):
    """One line about an output of the job document: its type, where it
    goes, then its files (count and bytes) and rungs once written."""
    where = output.get("name") or output.get("dir")
    line = output.get("type", "?") + (f" {where}" if where else "")
    files = output.get("files")
    if files is not None:
        line += f": {len(files)} files, {sum(f.get('bytes') or 0 for f in files)} bytes"
    rungs = output.get("rungs")
    if rungs:
        line += ", rungs " + " ".join(f"{r.get('width')}x{r.get('height')}" for r in rungs)
    return line


def _short_time(iso):
    if not iso:
        return "-"
    return iso.replace("T", " ")[:19]


def _state_callback(ctx, param, value):
    if value is None:
        return None
    if value.upper() not in _STATE_NAMES:
        raise click.BadParameter(f"{value!r} is not a job state; one of {', '.join(_STATE_NAMES)}")
    return value.upper()


@cli.command(name="list")
@click.option("--state", metavar="STATE", callback=_state_callback,
              help="Only jobs in this state: " + ", ".join(_STATE_NAMES) + ".")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--cursor", metavar="CURSOR", help="Where a previous page stopped.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_(client, state, limit, cursor, as_json):
    """List jobs, newest first."""
    jobs, next_cursor = client.list(state=state, limit=limit, cursor=cursor)
    if as_json:
        print_json({"jobs": jobs, "next_cursor": next_cursor})
        return
    if not jobs:
        click.echo("no jobs")
    else:
        rows = [("ID", "STATE", "PROGRESS", "CREATED (UTC)", "SOURCE -> DEST")]
        for job in jobs:
            rows.append((
                job.get("job_id", "?"),
                job.get("job_state", "?"),
                _pct(job.get("progress")),
                _short_time(job.get("created_at")),
                f"{job.get('source_path')} -> {job.get('dest_path')}",
            ))
        print_table(rows)
    if next_cursor:
        click.echo(f"more: nommer list --cursor {next_cursor}"
                   + (f" --state {state}" if state else ""), err=True)


@cli.command()
@click.argument("job_id", metavar="ID")
@click.pass_obj
def cancel(client, job_id):
    """Cancel a job that has not ended yet."""
    job = client.cancel(job_id)
    click.echo(f"{job.get('job_id', job_id)} {job.get('job_state')}")


@cli.command()
@click.argument("job_id", metavar="ID")
@click.pass_obj
def retry(client, job_id):
    """Queue a job that ended in ERROR, CANCELED or ABANDONED again."""
    job = client.retry(job_id)
    click.echo(f"{job.get('job_id', job_id)} {job.get('job_state')} (retry {job.get('retries')})")


@cli.command(short_help="Submit many jobs from a JSON file.")
@click.argument("file", metavar="FILE")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_obj
def batch(client, file, as_json):
    """Submit the jobs of FILE (- for stdin) in one request: a JSON object
    {"common": {...}, "sources": [{"source_path", "dest_path", ...}]} or
    {"jobs": [body, ...]}, or a JSON list of bodies. Prints one line per job:
    its index and id, or its index and why it was refused. Exits 1 if any
    was refused (the others are submitted)."""
    try:
        body = _read_json_file(file)
    except OSError as e:
        raise click.BadParameter(f"cannot read {file}: {e.strerror}") from None
    except ValueError as e:
        raise click.BadParameter(f"{file}: {e}") from None
    if isinstance(body, list):
        body = {"jobs": body}
    if not isinstance(body, dict) or not ({"jobs"} == set(body) or {"common", "sources"} == set(body)):
        raise click.BadParameter(f'{file}: expected {{"jobs": [...]}}, {{"common": {{...}}, "sources": [...]}} '
                                 f"or a list of job bodies")
    results = client.batch(body.get("jobs"), common=body.get("common"), sources=body.get("sources"))
    if as_json:
        print_json(results)
    else:
        for r in results:
            if r["success"]:
                click.echo(f"{r['index']} {r['job_id']}")
            else:
                click.echo(f"{r['index']} {r['error_code']}: {r['message']}")
    if not all(r["success"] for r in results):
        raise SystemExit(1)


@cli.command()
@click.argument("job_id", metavar="ID")
@_poll_option
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Give up (exit 4) after this long.")
@click.option("--json", "as_json", is_flag=True, help="Print the final job as JSON.")
@click.pass_obj
def wait(client, job_id, poll_s, timeout_s, as_json):
    """Follow a job until it ends; exit 0 if it FINISHED, 1 otherwise."""
    _wait_and_report(client, job_id, poll_s, timeout_s, as_json)


def _preset_kinds(preset):
    """What a preset makes: its output types (``hls+dash+poster``), or
    ``ffmpeg`` for a 2011 one."""
    outputs = preset.get("outputs")
    if outputs is None:
        return "ffmpeg"
    return "+".join(o.get("type", "?") for o in outputs) or "-"


@cli.command(name="presets")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def presets_(client, name, as_json):
    """List the server's presets (the names --preset accepts): name, what it
    makes, description. With NAME, show that one preset as JSON."""
    if name is not None:
        print_json(client.preset(name))
        return
    found = client.presets()
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo("no presets")
        return
    rows = [("NAME", "MAKES", "DESCRIPTION")]
    for preset in found:
        requires = preset.get("requires")
        description = preset.get("description") or ""
        if requires:
            description += f" (needs --override {', '.join(f'{r}=...' for r in requires)})"
        rows.append((preset.get("name", "?"), _preset_kinds(preset), description))
    print_table(rows)


def _event_line(at, job_id, kind, job):
    """One ``nommer watch`` line: time (UTC), job id, kind, state, progress, worker."""
    state = job.get("job_state") or "-"
    return (f"{_short_time(at)}  {job_id}  {kind:<10} {state:<11} {_pct(job.get('progress')):>4}  "
            f"{job.get('worker_id') or '-'}")


@cli.command(short_help="Print job events live (GET /events).")
@click.argument("job_id", metavar="[ID]", required=False)
@click.option("--state", "states", metavar="STATE", multiple=True, callback=lambda c, p, v: tuple(
    _state_callback(c, p, s) for s in v), help="Only events leaving a job in this state (repeatable).")
@click.option("--last-event-id", metavar="N", help="Resume after this event id instead of a snapshot.")
@click.option("--json", "as_json", is_flag=True, help="Print each event as one line of JSON.")
@click.pass_obj
def watch(client, job_id, states, last_event_id, as_json):
    """Print job events as they happen, one line each: time (UTC), job id,
    kind, state, progress, worker. It starts with the current jobs (kind
    "snapshot"). Reconnects by itself without missing events.

    With ID: only that job's events, ending when the job ends (exit 0 if it
    FINISHED, 1 otherwise). Without: every job this API key may see, until
    interrupted (Ctrl-C)."""
    for event in client.events(job_id=job_id, state=list(states) or None, last_event_id=last_event_id):
        if event["event"] in ("snapshot", "reset"):
            if event["event"] == "reset":
                click.echo(f"(reset: {event.get('reason') or 'events were missed'})", err=True)
            rows = event.get("jobs") or []
        else:
            rows = []
        if as_json:
            click.echo(json.dumps(event, separators=(",", ":")))
        elif event["event"] == "job":
            click.echo(_event_line(event.get("at"), event.get("job_id"), event.get("kind") or "?",
                                   event.get("job") or {}))
        else:
            for row in rows:
                click.echo(_event_line(row.get("updated_at"), row.get("job_id"), event["event"], row))
        if job_id is not None:
            current = event.get("job") if event["event"] == "job" else next(
                (r for r in rows if r.get("job_id") == job_id), None)
            final = (current or {}).get("job_state")
            if final in FINAL_STATE_NAMES:
                click.get_current_context().exit(0 if final == JobState.FINISHED.value else EXIT_NOT_FINISHED)


@cli.command()
@click.pass_obj
def schema(client):
    """Print the JSON Schema of job bodies (GET /schema)."""
    print_json(client.schema())


@cli.command()
@click.pass_obj
def health(client):
    """Check that feederd answers."""
    data = client.health()
    click.echo(f"{client.base_url}: {data.get('status', 'ok')}")



def _duration(seconds):
    """``"42s"``, ``"3m05s"``, ``"2h07m"``, ``"3d04h"``; ``"-"`` for None."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the workers as JSON.")
@click.pass_obj
def workers(client, as_json):
    """List the workers, most recently seen first: state ("(silent)" when no
    heartbeat came for WORKER_HEARTBEAT_TIMEOUT_S), instance type, jobs
    running/capacity, last heartbeat, and the running jobs with their
    progress; uptime and cost of their instances with a cloud fleet."""
    found = client.workers()
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo("no workers")
        return
    with_instances = any(w.get("instance") for w in found)
    rows = [("WORKER", "STATE", "TYPE", "JOBS", "SEEN") + (("UPTIME", "COST") if with_instances else ())
            + ("RUNNING",)]
    for w in found:
        state = w.get("state") or "?"
        if w.get("alive") is False and state != "exited":
            state += " (silent)"
        instance = w.get("instance") or {}
        row = (w.get("worker_id", "?"), state, w.get("instance_type") or instance.get("instance_type") or "-",
               f"{len(w.get('jobs') or [])}/{w.get('capacity', '?')}", _duration(w.get("seen_s_ago")) + " ago")
        if with_instances:
            cost = instance.get("cost_usd")
            row += (_duration(instance.get("uptime_s")), "-" if cost is None else f"${cost:.3f}")
        running = ", ".join(f"{j.get('job_id')} {j.get('job_state')} {_pct(j.get('progress'))}"
                            for j in w.get("current_jobs") or [])
        rows.append(row + (running or "-",))
    print_table(rows)




# Commands that do not talk to feederd (nommer.client.cli_admin).
cli.add_command(aws)
cli.add_command(keys)


def main(argv=None):
    """Entry point of the ``nommer`` command."""
    cli.main(args=argv, prog_name="nommer")


if __name__ == "__main__":
    main()
