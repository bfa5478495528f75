"""The ``nommer`` commands that do not talk to feederd: ``nommer aws setup``
(create or check the AWS resources a nomconf names) and ``nommer keys
create|list|revoke`` (the API key store the configuration names, opened
directly, so the first key can be made before any exists). ``nommer.client.cli``
adds them to the ``nommer`` group. Moved out of ``cli.py`` unchanged (issue 10).
"""

import click

from nommer.client.api import API_KEY_ENV
from nommer.client.cli_common import EXIT_API_ERROR, print_json, print_table


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


@click.group(short_help="Set up AWS resources.")
def aws():
    """AWS resources of a configuration (DynamoDB/SimpleDB, SQS, S3, the
    workers' EC2 security group)."""


@aws.command(short_help="Create or check the AWS resources a nomconf names.")
@click.option("--config", "-c", "config", metavar="PATH", default="nomconf", show_default=True,
              help="nomconf module name or path to a nomconf.py file.")
def setup(config):
    """Create the table or domain, queues (with the dead-letter redrive),
    config bucket and, with FLEET_BACKEND "ec2", the workers' security group
    (EC2_SECURITY_GROUPS, no inbound rules) the configuration names; check
    the ones that exist."""
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


@click.group(short_help="Create, list and revoke API keys.")
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
        print_json({"key": key.to_dict(), "secret": secret})
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
        print_json([key.to_dict() for key in found])
        return
    if not found:
        click.echo("no API keys (create one with `nommer keys create NAME`)")
        return
    rows = [("KEY_ID", "NAME", "SCOPES", "CREATED (UTC)", "REVOKED (UTC)")]
    for key in found:
        rows.append((key.key_id, key.name, ",".join(sorted(key.scopes)), _utc(key.created_at),
                     _utc(key.revoked_at)))
    print_table(rows)


@keys.command(name="revoke")
@click.argument("key_id")
@_config_option
def keys_revoke(key_id, config):
    """Revoke the API key KEY_ID (see `nommer keys list`): feederd refuses
    it from then on (within 5 s with the DynamoDB and SimpleDB stores)."""
    key = _with_key_store(config, lambda store: store.revoke(key_id))
    click.echo(f"revoked API key {key.key_id} {key.name!r} at {_utc(key.revoked_at)} UTC")


@keys.command(name="webhook-secret")
@click.argument("key_id")
@_config_option
def keys_webhook_secret(key_id, config):
    """Print the secret feederd signs the webhooks of KEY_ID's jobs with
    (their X-Nommer-Signature header; `anonymous` for jobs submitted
    without a key). Give it to the receiver, which checks each call with
    nommer.client.webhooks.verify. It is derived from WEBHOOK_SIGNING_SECRET
    (or the one generated in DATA_DIR): run this with feederd's --config."""
    from nommer.core import webhook_signing
    if key_id != webhook_signing.ANONYMOUS:
        _with_key_store(config, lambda store: store.get(key_id))  # NoSuchKey: one line, exit 2
    settings = _load_settings(config)
    try:
        base = webhook_signing.base_secret(settings)
    except (OSError, ValueError) as exc:
        click.echo(f"error: the webhook signing secret cannot be read: {exc}", err=True)
        click.get_current_context().exit(EXIT_API_ERROR)
    click.echo(webhook_signing.key_secret(base, key_id))
    click.echo(f"Webhooks of {key_id}'s jobs carry X-Nommer-Signature: t=<unix s>,v1=<hex HMAC-SHA256 of "
               "'<t>.<body>' with this secret>; check them with nommer.client.webhooks.verify.", err=True)
