"""The ``nommer`` command: submit, watch, list and cancel encoding jobs; list
the workers; manage API keys (``nommer keys``) and AWS resources (``nommer aws``).

Every command that talks to feederd sends the API key given with
``--api-key`` or the environment variable NOMMER_API_KEY. ``nommer keys``
does not talk to feederd: it opens the key store the configuration names
(``--config``), so the first key can be made before any exists.

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
from nommer.client import presets as presets_mod
from nommer.client.api import (
    API_KEY_ENV,
    DEFAULT_API_URL,
    APIError,
    ClientError,
    ConnectionFailed,
    InvalidInputError,
    NommerClient,
    WaitTimeout,
    job_options_from,
)
from nommer.core.states import JobState

EXIT_NOT_FINISHED = 1
EXIT_API_ERROR = 2
EXIT_UNREACHABLE = 3
EXIT_TIMEOUT = 4
EXIT_INTERRUPTED = 130

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
_LOCAL_COMMANDS = ("keys", "aws", "presets")


def _print_json(value):
    click.echo(json.dumps(value, indent=2, sort_keys=False))


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
        _print_json(job)
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


def _preset_callback(ctx, param, value):
    if value is None:
        return None
    try:
        return presets_mod.get(value)
    except KeyError as e:
        raise click.BadParameter(e.args[0]) from None


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
@click.option("--preset", "preset_options", metavar="NAME", callback=_preset_callback,
              help="A named preset (see `nommer presets`).")
@click.option("--options", "file_options", metavar="FILE", callback=_options_callback,
              help="A JSON file: a job_options object or a list of FFmpeg passes.")
@click.option("--notify-url", metavar="URL", help="POSTed to on every state change.")
@click.option("--wait", "wait_", is_flag=True, help="Follow the job until it ends.")
@_poll_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def submit(client, src, dest, preset_options, file_options, notify_url, wait_, poll_s, as_json):
    """Encode SRC into DEST (local paths or URIs: file://, http(s)://, s3://).

    Prints the job id; with --wait, follows it and exits 0 if it FINISHED,
    1 otherwise.
    """
    if (preset_options is None) == (file_options is None):
        raise click.UsageError("give exactly one of --preset NAME and --options FILE")
    job_options = preset_options if preset_options is not None else file_options
    job_id = client.submit(to_uri(src), to_uri(dest), job_options, notify_url=notify_url)
    if as_json and not wait_:
        _print_json({"job_id": job_id})
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
        _print_json(job)
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
    if job.get("output"):
        click.echo(f"{'output':<{width}}  {json.dumps(job['output'])}")


def _short_time(iso):
    if not iso:
        return "-"
    return iso.replace("T", " ")[:19]


def _table(rows):
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths)] + [row[-1]]
        click.echo("  ".join(cells).rstrip())


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
        _print_json({"jobs": jobs, "next_cursor": next_cursor})
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
        _table(rows)
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
@_poll_option
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Give up (exit 4) after this long.")
@click.option("--json", "as_json", is_flag=True, help="Print the final job as JSON.")
@click.pass_obj
def wait(client, job_id, poll_s, timeout_s, as_json):
    """Follow a job until it ends; exit 0 if it FINISHED, 1 otherwise."""
    _wait_and_report(client, job_id, poll_s, timeout_s, as_json)


@cli.command(name="presets")
def presets_():
    """List the presets --preset accepts."""
    names = presets_mod.names()
    width = max(map(len, names), default=0)
    for name in names:
        click.echo(f"{name:<{width}}  {presets_mod.describe(name)}")


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
        _print_json(found)
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
    _table(rows)


def _load_settings(config):
    """The settings of ``config`` (a nomconf module name or path); every
    configuration problem reported together, as a click error (exit 1)."""
    from nommer.conf import ConfigErrors, load_settings
    try:
        return load_settings(config)
    except ConfigErrors as exc:
        raise click.ClickException(str(exc))


def _run_on_reactor(work):
    """Run ``work(reactor)`` (a coroutine function) on a reactor of its own
    and return its result, or raise its exception once the reactor stopped."""
    from twisted.internet import defer, task
    outcome = {}

    def run(reactor):
        d = defer.Deferred.fromCoroutine(work(reactor))
        d.addCallbacks(lambda result: outcome.update(result=result),
                       lambda failure: outcome.update(failure=failure))
        return d
    try:
        task.react(run)
    except SystemExit as exc:
        if exc.code:
            raise
    if "failure" in outcome:
        outcome["failure"].raiseException()
    return outcome["result"]


@cli.group(short_help="Set up AWS resources.")
def aws():
    """AWS resources of a configuration (DynamoDB/SimpleDB, SQS, S3)."""


@aws.command(short_help="Create or check the AWS resources a nomconf names.")
@click.option("--config", "-c", "config", metavar="PATH", default="nomconf", show_default=True,
              help="nomconf module name or path to a nomconf.py file.")
def setup(config):
    """Create the table or domain, queues (with the dead-letter redrive) and
    config bucket the configuration names; check the ones that exist."""
    from nommer.core.aws_setup import setup_resources

    settings = _load_settings(config)
    try:
        lines = _run_on_reactor(lambda reactor: setup_resources(settings, reactor))
    except Exception as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(2)
    for line in lines:
        click.echo(line)


# --- API keys -------------------------------------------------------------------


_config_option = click.option(
    "--config", "-c", "config", metavar="PATH", default="nomconf", show_default=True,
    help="nomconf module name or path to a nomconf.py file: the one feederd runs with "
         "(relative DATA_DIR is taken from the current directory, as feederd does).")


def _with_key_store(config, operation):
    """``await operation(store)`` on the key store of ``config``'s settings;
    its result. Expected failures become one line on stderr and exit 2."""
    from nommer.core.errors import NommerError
    from nommer.core.keys import open_key_store

    settings = _load_settings(config)

    async def work(reactor):
        store = open_key_store(settings, reactor=reactor)
        try:
            return await operation(store)
        finally:
            await store.close()
    try:
        return _run_on_reactor(work)
    except NommerError as exc:
        click.echo(f"error: {exc.message}", err=True)
    except Exception as exc:   # the backend's own: a missing table, AWS refusing, a locked file
        click.echo(f"error: the key store ({settings.JOB_STORE_BACKEND}) failed: {exc}", err=True)
    click.get_current_context().exit(EXIT_API_ERROR)


def _utc(epoch_s):
    import datetime
    if epoch_s is None:
        return "-"
    return datetime.datetime.fromtimestamp(epoch_s, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _scope_callback(ctx, param, values):
    from nommer.core.keys import DEFAULT_SCOPES, InvalidKeySpec, validate_scopes
    if not values:
        return frozenset(DEFAULT_SCOPES)
    try:
        return validate_scopes(",".join(values))
    except InvalidKeySpec as exc:
        raise click.BadParameter(exc.message.removeprefix("scopes: ")) from None


@cli.group(short_help="Create, list and revoke API keys.")
def keys():
    """API keys of feederd. These commands open the key store of the
    configuration directly (the SQLite file in DATA_DIR, or the DynamoDB
    table / SimpleDB domain), not feederd's API: run them where feederd
    runs, with its --config. A key is shown once, when it is created; the
    store keeps only its hash."""


@keys.command(name="create")
@click.argument("name")
@click.option("--scope", "scopes", metavar="SCOPES", multiple=True, callback=_scope_callback,
              help="Comma-separated, or repeated: submit, read, cancel, admin (admin sees every job "
                   "and /workers). Default: submit,read,cancel.")
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print the key and its secret as JSON.")
def keys_create(name, scopes, config, as_json):
    """Create an API key called NAME and print its secret, once.

    The secret alone goes to stdout (KEY=$(nommer keys create ci) keeps
    it); what it is goes to stderr."""
    key, secret = _with_key_store(config, lambda store: store.create(name, scopes))
    if as_json:
        _print_json({"key": key.to_dict(), "secret": secret})
    else:
        click.echo(f"created API key {key.key_id} {key.name!r}, scopes {','.join(sorted(key.scopes))}", err=True)
        click.echo(secret)
    click.echo("This secret is shown only now and cannot be shown again: keep it somewhere safe. "
               f"Clients send it as `Authorization: Bearer <secret>` (nommer: {API_KEY_ENV} or --api-key).",
               err=True)


@keys.command(name="list")
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print the keys as JSON.")
def keys_list(config, as_json):
    """List the API keys, oldest first, revoked ones too (never their secrets)."""
    found = _with_key_store(config, lambda store: store.list())
    if as_json:
        _print_json([key.to_dict() for key in found])
        return
    if not found:
        click.echo("no API keys (create one with `nommer keys create NAME`)")
        return
    rows = [("KEY_ID", "NAME", "SCOPES", "CREATED (UTC)", "REVOKED (UTC)")]
    for key in found:
        rows.append((key.key_id, key.name, ",".join(sorted(key.scopes)), _utc(key.created_at),
                     _utc(key.revoked_at)))
    _table(rows)


@keys.command(name="revoke")
@click.argument("key_id")
@_config_option
def keys_revoke(key_id, config):
    """Revoke the API key KEY_ID (see `nommer keys list`): feederd refuses
    it from then on (within 5 s with the DynamoDB and SimpleDB stores)."""
    key = _with_key_store(config, lambda store: store.revoke(key_id))
    click.echo(f"revoked API key {key.key_id} {key.name!r} at {_utc(key.revoked_at)} UTC")


def main(argv=None):
    """Entry point of the ``nommer`` command."""
    cli.main(args=argv, prog_name="nommer")


if __name__ == "__main__":
    main()
