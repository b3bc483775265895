"""`meetbridge`: the operator's command line. Reads the same environment as the service."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click
import redis

from meetbridge.config import ConfigError, Settings, get_settings
from meetbridge.logs import mask_url

if TYPE_CHECKING:
    from meetbridge.doctor import Check


def _settings() -> Settings:
    try:
        return get_settings()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


def _services() -> Any:
    from workers.state.server import ServerView
    from workers.wiring import build_services

    services = build_services(_settings())
    try:
        ServerView(services.redis).ping()
    except redis.RedisError as error:
        raise click.ClickException(
            f"Redis at {mask_url(services.settings.redis_url)} does not answer: {error}") from None
    return services


@click.group()
def main() -> None:
    """Keeps Zoom meetings and NeetoCal bookings in step with meetergo appointments."""


@main.command()
@click.argument("appointment_id")
def status(appointment_id: str) -> None:
    """Show what the service knows about one appointment (as the admin API does)."""
    from workers.admin import appointment_view

    view = appointment_view(_services(), appointment_id)
    if view is None:
        raise click.ClickException(f"no appointment {appointment_id}")
    click.echo(json.dumps(view, indent=2))


@main.command(name="list")
@click.option("--status", "wanted", default="failed", show_default=True,
              type=click.Choice(["pending", "synced", "cancelled", "skipped", "failed", "waiting"]))
def list_appointments(wanted: str) -> None:
    """List appointment ids with a status (failed: the dead-letter set)."""
    from workers.admin import appointments_with_status

    services = _services()
    count = 0
    for appointment_id in appointments_with_status(services, wanted):
        record = services.store.load(appointment_id)
        detail = (record.error or record.waiting_reason or "") if record else ""
        click.echo(f"{appointment_id}\t{detail}")
        count += 1
    click.echo(f"{count} appointment(s) {wanted}", err=True)


@main.command()
@click.argument("appointment_ids", nargs=-1)
@click.option("--failed", is_flag=True, help="Replay every appointment in the dead-letter set.")
def replay(appointment_ids: tuple[str, ...], failed: bool) -> None:
    """Run the sync again for appointments (safe to repeat)."""
    from workers.admin import replay as replay_one

    services = _services()
    ids = list(appointment_ids) + (services.store.dead_letters() if failed else [])
    if not ids:
        raise click.UsageError("name appointment ids or pass --failed")
    unknown: list[str] = []
    with click.progressbar(ids, label="Queueing syncs", file=sys.stderr, show_pos=True) as bar:
        for appointment_id in bar:
            if not replay_one(services, appointment_id):
                unknown.append(appointment_id)
    click.echo(f"queued {len(ids) - len(unknown)} sync(s)")
    if unknown:
        raise click.ClickException(f"unknown appointment(s): {', '.join(unknown)}")


@main.command(name="migrate-keys")
def migrate_keys() -> None:
    """Move appointment events and history to the key names of this version (once, workers stopped)."""
    moved = _services().store.migrate_keys()
    click.echo(f"moved {moved} key(s)")


@main.command()
@click.argument("appointment_id")
def refresh(appointment_id: str) -> None:
    """Fetch a fresh Zoom start_url for an appointment now."""
    from workers.tasks import refresh_one

    result = refresh_one(_services(), appointment_id, force=True)
    click.echo(result)
    if result not in ("refreshed", "fresh"):
        raise click.ClickException(f"no start_url refreshed for {appointment_id}: {result}")


@main.command(name="host-link")
@click.argument("appointment_id")
@click.option("--revoke", is_flag=True, help="Make the current link stop working; its next link is new.")
def host_link_command(appointment_id: str, revoke: bool) -> None:
    """Print an appointment's current host link (a host credential: hand it to the host alone)."""
    from workers.admin import host_link_for, revoke_host_link

    services = _services()
    record = services.store.load(appointment_id)
    if record is None:
        raise click.ClickException(f"no appointment {appointment_id}")
    link = revoke_host_link(services, appointment_id) if revoke else host_link_for(services.settings, record)
    if revoke:
        click.echo("revoked: links handed out so far answer 410", err=True)
    if link is None:
        raise click.ClickException(f"{appointment_id} has no Zoom meeting to start (status {record.status})")
    click.echo(link)


@main.command()
@click.option("--dry-run", is_flag=True, help="Show what would change in meetergo; change nothing.")
@click.option("--allow-http", is_flag=True, help="Register an http:// PUBLIC_URL (local tests only).")
def connect(dry_run: bool, allow_http: bool) -> None:
    """Register the webhook in meetergo (one of ours, reused or repaired) and check Zoom, NeetoCal, meetergo."""
    from meetbridge.connect import connect as run_connect

    services = _services()
    if dry_run:
        click.echo("dry run: nothing is changed in meetergo")
    problems = 0
    try:
        for check in run_connect(services, dry_run=dry_run, allow_http=allow_http):
            _echo_check(check)
            problems += check.level == "fail"
    finally:
        services.close()
    if problems:
        raise click.ClickException(f"{problems} thing(s) to fix before meetbridge is connected")
    click.echo("connected: meetergo delivers to meetbridge, and Zoom, NeetoCal and meetergo are ready")


def _echo_check(check: Check) -> None:
    mark = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}[check.level]
    click.echo(f"[{mark}] {check.name}: {check.detail}")


@main.command()
def doctor() -> None:
    """Check Redis, credentials and each API, and say what is wrong."""
    from meetbridge.doctor import checks_from_environment

    problems = 0
    # Weak or stale settings are reported as FAIL lines, and the rest is still checked.
    for check in checks_from_environment():
        _echo_check(check)
        problems += check.level == "fail"
    if problems:
        raise click.ClickException(f"{problems} problem(s) found")
    click.echo("all good")


@main.command()
@click.option("--exit-after-demo", is_flag=True, help="Stop everything once the demo booking is synced.")
@click.option("--no-demo", is_flag=True, help="Do not book a demo appointment.")
def dev(exit_after_demo: bool, no_demo: bool) -> None:
    """Run web, worker and beat locally (with the simulators when no real credentials are set)."""
    from meetbridge.dev import run

    sys.exit(run(demo=not no_demo, exit_after_demo=exit_after_demo))


@main.command(name="host-page")
@click.argument("email")
@click.option("--rotate", is_flag=True,
              help="Revoke the host's earlier page and calendar links and the host links they showed; print new ones.")
def host_page_command(email: str, rotate: bool) -> None:
    """Print a host's private page and calendar links (bearer links: hand them to the host alone)."""
    from workers.host_pages import HostPages, normalize_email

    try:
        email = normalize_email(email)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="EMAIL") from None
    services = _services()
    if not services.settings.secret_key:
        raise click.ClickException("SECRET_KEY is not set: host pages are signed with it")
    pages = HostPages(services)
    links = pages.rotate(email) if rotate else pages.page_links(email)
    if rotate:
        click.echo(f"revoked: the earlier links of {email} answer 403", err=True)
    click.echo(f"page:     {links.page_url}")
    click.echo(f"calendar: {links.calendar_url}")


if __name__ == "__main__":
    main()
