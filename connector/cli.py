"""The ``tds`` command line.

Commands that act on a running node talk to its management API (``--node URL --token T``, defaulting to
what ``--dir`` holds), never to its database.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from connector import jsonbound, launcher
from connector.errors import ConfigError, TdsError

T = TypeVar("T")


#: Exit codes, the same for every command (``tds --help``).
EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = launcher.EXIT_REFUSED, launcher.EXIT_USAGE, launcher.EXIT_UNREACHABLE


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def exit_code_of(status: int) -> int:
    """The exit code for a management API answer with HTTP *status* that ended a command: the node could not
    be reached (0: no answer) → 3; it refused the request as the state stands (409: a revoked agreement, a
    step the state does not allow …; 429: over the rate) or failed (5xx) → 1; anything else is a request to
    correct (400 bad input, 401 token, 403 admin only, 404 no such thing) → 2. (A policy's deny is an answer,
    not an error: the commands that get one exit 1 themselves.)"""
    if status == 0:
        return EXIT_UNREACHABLE
    if status in (409, 429) or status >= 500:
        return EXIT_REFUSED
    return EXIT_USAGE


def _run(coro: Awaitable[T]) -> T:
    from connector.client import ClientError

    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except ClientError as exc:
        _fail(str(exc), exit_code_of(exc.status))
        raise  # unreachable
    except TdsError as exc:
        _fail(str(exc))
        raise  # unreachable


#: Where ``--ca`` (``TDS_CA``) is kept for :func:`_client` (``click.Context.meta``, shared by the whole command).
_CA = "tds.ca"


def _remember_ca(ctx: click.Context, _: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.meta[_CA] = str(value)


def _client(data_dir: Path | None, node: str | None, token: str | None, *, admin: bool = False) -> Any:
    from connector.client import ManagementClient, same_listener

    context = click.get_current_context(silent=True)
    ca: str | None = context.meta.get(_CA) if context is not None else None
    try:
        if node and token:
            return ManagementClient(node, token, ca=ca)
        if data_dir is None:
            _fail("give --dir DIR (a node's data folder) or both --node URL and --token TOKEN")
        client = ManagementClient.for_data_dir(data_dir, admin=admin, ca=ca)  # type: ignore[arg-type]
    except ConfigError as exc:
        _fail(str(exc))
        raise
    if node and not same_listener(node, client.base_url):
        # The folder's token would be sent to another node: say which one this folder's is, and both ways out.
        _fail(f"--node {node} is not this folder's node (its management API is {client.base_url}); give --token "
              "for that node, or drop --dir")
    if token:  # an explicit token always wins over the folder's: it says which participant or application acts
        client = client.with_token(token)
    return client


def node_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--ca", type=click.Path(exists=True, dir_okay=False, path_type=Path), envvar="TDS_CA",
                      expose_value=False, callback=_remember_ca,
                      help="PEM CA bundle to check the management API's HTTPS certificate with (default: the "
                           "system store; with --dir alone, the certificate the folder's config names).")(fn)
    fn = click.option("--token", envvar="TDS_TOKEN",
                      help="Management token; given, it wins over DIR's (default: DIR/management.token).")(fn)
    fn = click.option("--node", "node_url", envvar="TDS_NODE", help="Management API URL of a running node.")(fn)
    fn = click.option("--dir", "data_dir", type=click.Path(path_type=Path), envvar="TDS_DIR",
                      help="The node's data folder.")(fn)
    return fn


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``: the result as one JSON document on stdout, and nothing else there (errors stay on stderr, with
    the same exit codes)."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print the result as one JSON document on stdout (errors stay on stderr).")(fn)


@click.group()
@click.version_option(package_name="tds-connector")
def main() -> None:
    """TDS Connector: a trusted data space node (DSP 2025-1, ODRL usage control).

    The commands that print a result (all but backup and restore) take --json: one JSON document on stdout,
    nothing else there (progress and errors go to stderr). `tds catalog` prints JSON whenever stdout is not a
    terminal.

    \b
    Exit codes (every command):
      0  done (a use permitted, a check that would permit)
      1  refused or failed: a use denied, an agreement revoked or not in force, a step the state does not
         allow (409), over the rate (429), the node failed (5xx); and what a command's own help names
      2  usage error: a wrong option or input, an unknown id, a token without the right (400/401/403/404)
      3  the node's management API cannot be reached
    """


@main.command()
@click.option("--dir", "data_dir", type=click.Path(path_type=Path), required=True, help="Data folder to create.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Take every setting from this tds.toml (copied into DIR) instead of the options below.")
@click.option("--name", help="Participant name (lowercase letters, digits, '-'). Required without --config.")
@click.option("--legal-name", help="Legal name shown in the self-description (default: NAME).")
@click.option("--port", type=int, default=8181, show_default=True, help="Public (DSP) port.")
@click.option("--management-port", type=int, help="Management API port (default: PORT+1).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the public listener binds.")
@click.option("--public-url", help="URL peers use to reach this node (default: http://127.0.0.1:PORT).")
@click.option("--region", default="CN", show_default=True, help="ISO 3166 region, e.g. CN-GD.")
@click.option("--industry", default="", help="Industry named in the self-description.")
@click.option("--contact", default="", help="Contact named in the self-description.")
@click.option("--did-method", type=click.Choice(["web", "key"]), default="web", show_default=True)
@click.option("--dev", is_flag=True, help="Dev mode: allow plain http and loopback peers.")
@click.option("--trusted-network", "trusted", multiple=True, help="CIDR the node may call although private.")
@json_option
def init(data_dir: Path, config_file: Path | None, name: str | None, legal_name: str | None, port: int,
         management_port: int | None, host: str, public_url: str | None, region: str, industry: str, contact: str,
         did_method: str, dev: bool, trusted: tuple[str, ...], as_json: bool) -> None:
    """Create a node: config, keys (mode 0600) and a first management token."""
    from click.core import ParameterSource

    from connector import filemodes
    from connector.bootstrap import ADMIN_TOKEN_FILE, TOKEN_FILE, init_from_config, init_node

    filemodes.restrict_umask()  # the node's folder is its own alone (files 0600, folders 0700)
    ctx = click.get_current_context()
    if config_file is not None:
        given = [f"--{p.replace('_', '-')}" for p in ctx.params if p not in ("data_dir", "config_file", "as_json")
                 and ctx.get_parameter_source(p) is ParameterSource.COMMANDLINE]
        if given:
            _fail(f"--config takes every setting from the file; leave out {', '.join(given)}")
        try:
            result = init_from_config(data_dir, config_file.read_text(encoding="utf-8"))
        except ConfigError as exc:
            _fail(f"{config_file}: {exc.message}")
            return
        name = result.config.participant.name
    elif name is None:
        _fail("give --name NAME (or --config FILE)")
        return
    else:
        try:
            result = init_node(data_dir, name=name, legal_name=legal_name, port=port,
                               management_port=management_port, host=host, public_url=public_url, region=region,
                               industry=industry, contact=contact, did_method=did_method, dev_mode=dev,
                               trusted_networks=trusted)
        except ConfigError as exc:
            hint = " (pass --dev for a local node, or --public-url https://...)" if "https" in exc.message else ""
            _fail(exc.message + hint)
            return
    if as_json:
        _print_json({"dataDir": str(data_dir), "participant": name, "did": result.did,
                     "publicUrl": result.config.public_url, "tokenFile": str(data_dir / TOKEN_FILE),
                     "adminTokenFile": str(data_dir / ADMIN_TOKEN_FILE)})
        return
    click.echo(f"Created node in {data_dir}")
    click.echo(f"  participant  {name}  {result.did}")
    click.echo(f"  public URL   {result.config.public_url}")
    click.echo(f"  token        written to {data_dir / TOKEN_FILE} (mode 0600)")
    click.echo(f"  admin token  written to {data_dir / ADMIN_TOKEN_FILE} (mode 0600; hosts participants)")
    click.echo(f"Start it with: tds serve --dir {data_dir}")


@main.command()
@click.option("--dir", "data_dir", type=click.Path(path_type=Path), required=True, envvar=launcher.DIR_VARIABLE)
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Public port instead of the configured one (another process of a node on PostgreSQL).")
@click.option("--management-port", type=click.IntRange(0, 65535), default=None,
              help="Management port instead of the configured one.")
def serve(data_dir: Path, port: int | None, management_port: int | None) -> None:
    """Run the node until SIGTERM or Ctrl+C. Several processes may serve one node whose store is PostgreSQL,
    each on ports of its own behind one address (README, "Scale out")."""
    # Also how `tds serve --dir DIR` starts without the rest of the command line.
    launcher.serve(data_dir, port=port, management_port=management_port)


@main.command()
@click.option("--dir", "data_dir", type=click.Path(path_type=Path), required=True, envvar="TDS_DIR")
@json_option
def info(data_dir: Path, as_json: bool) -> None:
    """Print the node's DIDs, endpoints, key fingerprints and database schema (from its data folder)."""
    from connector.bootstrap import keys_dir, node_key, participant_did, store_location
    from connector.config import load_config, management_url_of
    from connector.identity.keys import load_keys
    from connector.store.db import check_schema_version, schema_version_of
    from connector.store.migrations import MIGRATIONS

    try:
        config = load_config(data_dir)
        name = config.participant.name
        keys = load_keys(keys_dir(data_dir, name), node_key(data_dir))
    except (ConfigError, OSError, ValueError) as exc:
        _fail(str(exc))
        return
    found: int | None = None
    schema_problem: str | None = None
    location = store_location(data_dir, config)
    try:
        found = schema_version_of(location)
        if found is not None:
            check_schema_version(found, location)
    except TdsError as exc:
        schema_problem = exc.message
    known = len(MIGRATIONS)
    if schema_problem:
        schema = "cannot be read" if found is None else f"{found} (this software knows up to {known})"
    elif found is None:
        schema = "no database yet"
    else:
        schema = f"{found} (current)" if found == known else f"{found} (migrated to {known} when the node starts)"
    did = participant_did(config, keys, name, config.participant.did_method)
    base = f"{config.public_url}/participants/{name}"
    fp = keys.fingerprints()
    rows = [
        ("participant", f"{name} ({config.participant.legal_name}, {config.participant.region})"),
        ("DID", did),
        ("DSP endpoint", f"{base}/api/dsp/2025-1"),
        ("version document", f"{base}/.well-known/dspace-version"),
        ("self-description", f"{base}/.well-known/tds/self-description"),
        ("DID document", f"{base}/did.json" if did.startswith("did:web:") else "(did:key: derived from the DID)"),
        ("management API", f"{management_url_of(config)}/api/management/v1"),
        ("Ed25519 key", fp["ed25519"]),
        ("X25519 key", fp["x25519"]),
        ("dev mode", "on" if config.node.dev_mode else "off"),
        ("database schema", schema),
        ("store", location.redacted() if not isinstance(location, Path) else str(location)),
    ]
    if as_json:
        _print_json({
            "participant": name, "legalName": config.participant.legal_name, "region": config.participant.region,
            "did": did, "dspEndpoint": f"{base}/api/dsp/2025-1",
            "versionDocument": f"{base}/.well-known/dspace-version",
            "selfDescription": f"{base}/.well-known/tds/self-description",
            "didDocument": f"{base}/did.json" if did.startswith("did:web:") else None,
            "managementApi": dict(rows)["management API"], "fingerprints": fp, "devMode": config.node.dev_mode,
            "databaseSchema": {"version": found, "known": known, "problem": schema_problem},
            "store": dict(rows)["store"]})
        if schema_problem:
            _fail(schema_problem, EXIT_REFUSED)
        return
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key.ljust(width)}  {value}")
    if schema_problem:
        _fail(schema_problem, EXIT_REFUSED)


def _passphrase(env_name: str | None, *, confirm: bool) -> str:
    """From the environment variable named *env_name*, else asked for (never an argument: a command line is
    visible to other local users and kept in shell histories)."""
    import os

    if env_name:
        value = os.environ.get(env_name)
        if not value:
            _fail(f"the environment variable {env_name} (--passphrase-env) is not set or empty")
        return str(value)
    return str(click.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm, err=True))


def _on_sigterm_exit() -> None:
    """SIGTERM ends the command through its clean-up (a half-written file is removed), not in the middle."""
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


@main.group(invoke_without_command=True)
@click.option("--dir", "data_dir", type=click.Path(path_type=Path), envvar="TDS_DIR",
              help="The node's data folder (the node may be running).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="The backup file to write.")
@click.option("--passphrase-env", metavar="NAME", help="Read the passphrase from environment variable NAME "
              "(default: ask for it).")
@click.option("--to-public-key", "public_key", metavar="KEY",
              help="Encrypt to this X25519 public key instead (z6LS… as `tds backup keygen` prints it, base64, or a "
                   "file holding one): this machine cannot read its own backups.")
@click.pass_context
def backup(ctx: click.Context, data_dir: Path | None, output: Path | None, passphrase_env: str | None,
           public_key: str | None) -> None:
    """Back up a node's data folder into one encrypted file: tds backup --dir DIR -o FILE.

    A consistent copy while the node runs: the database through SQLite's backup API, then keys, config,
    tokens, files/ and the vault to match it. Written to FILE.part and renamed to FILE when complete (an
    earlier FILE stays until then). Exit 1 if the backup cannot be made. README: "Backups and restores".
    """
    if ctx.invoked_subcommand is not None:
        return
    from connector import archive
    from connector import backup as backups

    if data_dir is None or output is None:
        _fail("give --dir DIR (the node's data folder) and -o FILE (the backup to write)")
        return
    if public_key is not None and passphrase_env is not None:
        _fail("give --to-public-key or --passphrase-env, not both")
    _on_sigterm_exit()
    from connector import filemodes

    filemodes.restrict_umask()
    try:
        if public_key is not None:
            header, key = archive.recipient_header(backups.public_key_from(public_key))
        else:
            secret = _passphrase(passphrase_env, confirm=True)
            archive.check_passphrase(secret)
            header, key = archive.passphrase_header(secret)
        result = backups.make_backup(data_dir, output, header, key)
    except TdsError as exc:
        _fail(exc.message, EXIT_REFUSED)
        return
    mib = result.bytes / 2**20
    rate = f" ({mib / result.seconds:.0f} MiB/s)" if result.seconds >= 1 else ""
    click.echo(f"backup written to {result.path}: {result.files} files, {mib:.1f} MiB, {result.seconds:.1f} s{rate}")
    click.echo(f"  encrypted {'to ' + str(header.public_key) if header.recipient else 'with the passphrase'}")
    for name, did in result.participants:
        click.echo(f"  participant {name}  {did}")
    for folder in result.deleted:
        click.echo(f"  {folder}: the agreement's data was deleted while the backup ran (restored as deleted)")
    for item in result.skipped:
        click.echo(f"  left out: {item}")
    for item in result.outside:
        click.echo(f"  not in the backup (back it up yourself): {item}")


@backup.command("keygen")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The private key file to write (mode 0600); the public key goes to FILE.pub.")
def backup_keygen(output: Path) -> None:
    """Make a key pair for backups that this machine can write but not read.

    Keep FILE (the private key) away from the node, e.g. offline; give FILE.pub or the printed key to
    `tds backup --to-public-key`, and FILE to `tds restore --private-key`.
    """
    from connector import backup as backups
    from connector import filemodes

    filemodes.restrict_umask()
    try:
        public = backups.keygen(output)
    except TdsError as exc:
        _fail(exc.message, EXIT_REFUSED)
        return
    click.echo(f"private key written to {output} (mode 0600): keep it away from the node")
    click.echo(f"public key {public} (also in {output}.pub)")


@main.command()
@click.argument("archive_file", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dir", "data_dir", type=click.Path(path_type=Path), required=True,
              help="The folder to restore into: new, or empty.")
@click.option("--passphrase-env", metavar="NAME", help="Read the passphrase from environment variable NAME "
              "(default: ask for it).")
@click.option("--private-key", "private_key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The key file of a backup made --to-public-key (from `tds backup keygen`).")
@click.option("--max-bytes", type=click.IntRange(0), help="Refuse a backup holding more than this "
              "(default: the free space of the folder's disk, less 1 GiB).")
@click.option("--max-files", type=click.IntRange(1), default=1_000_000, show_default=True,
              help="Refuse a backup holding more files and folders than this.")
def restore(archive_file: Path, data_dir: Path, passphrase_env: str | None, private_key: Path | None,
            max_bytes: int | None, max_files: int) -> None:
    """Restore a backup into a new folder, for a node then started there: tds restore FILE --dir DIR.

    A wrong passphrase or key, a damaged or cut-short file, or an entry that would leave DIR or is not a
    plain file or folder stops the restore with exit 1, and nothing it wrote is left.
    """
    from connector import backup as backups
    from connector import filemodes
    from connector.archive import Header
    from connector.errors import BackupError

    _on_sigterm_exit()
    filemodes.restrict_umask()

    def key_of(header: Header) -> bytes:
        if private_key is not None:
            return header.key_from_private_key(backups.private_key_from(private_key))
        if header.recipient is not None:
            raise BackupError(f"this backup is encrypted to the public key {header.public_key}: give --private-key "
                              "FILE (the key file made by `tds backup keygen`)")
        return header.key_from_passphrase(_passphrase(passphrase_env, confirm=False))

    try:
        result = backups.restore(archive_file, data_dir, key_of, max_bytes=max_bytes, max_entries=max_files)
    except TdsError as exc:
        _fail(exc.message, EXIT_REFUSED)
        return
    about = result.about
    click.echo(f"restored the backup of {about.get('created')} into {data_dir}: {result.files} files, "
               f"{result.bytes / 2**20:.1f} MiB, {result.seconds:.1f} s")
    for p in about.get("participants") or []:
        click.echo(f"  participant {p.get('name')}  {p.get('did')}")
    if result.relocated:
        click.echo(f"  {result.relocated} assets' file paths moved from {about.get('dataDir')} to {data_dir}")
    for folder in result.deleted:
        click.echo(f"  {folder}: deleted while the backup ran (restored as deleted)")
    for named in result.missing:
        click.echo(f"  tds.toml names {named}, which is not here: copy it over (it is not in a backup)")
    click.echo(f"  uses logged after {about.get('created')} are not in it: the providers' receipts show them, and "
               "an agreement whose provider acknowledged more than its log holds refuses further uses")
    click.echo(f"start the node there: tds serve --dir {data_dir}")


@main.group("store")
def store_group() -> None:
    """The node's store: its SQLite file (the default) or PostgreSQL."""


@store_group.command("migrate")
@click.option("--dir", "data_dir", type=click.Path(path_type=Path), required=True, envvar="TDS_DIR",
              help="The node's data folder (the node must be stopped).")
@click.option("--to", "url", required=True, metavar="URL",
              help="The PostgreSQL store: postgresql://USER@HOST:PORT/DB[?schema=NAME] (a new or empty schema; "
                   "default schema tds).")
@json_option
def store_migrate(data_dir: Path, url: str, as_json: bool) -> None:
    """Move a stopped node's data from its SQLite file (DIR/tds.db) to PostgreSQL, check the copy (every table's
    rows, every usage chain's head), then name the store at the top of DIR/tds.toml. DIR/tds.db is left as it
    was: a copy of the data as it was moved.

    \b
    Exit codes (DIR is changed only on 0):
      1  refused or failed: the node is running, the target schema holds a node's
         data, tds.db is not at this release's schema, tds.toml names a store
      2  a bad URL or data folder
      3  the PostgreSQL server cannot be reached
    """
    from connector import filemodes
    from connector.bootstrap import DB_FILE
    from connector.config import CONFIG_FILE
    from connector.store.move import BadStoreUrl, StoreUnreachable, move_to_postgres

    _on_sigterm_exit()  # the copy is one transaction: ended here, it is rolled back and nothing is changed
    filemodes.restrict_umask()  # SQLite's -wal, made while the file is read, is as private as the database
    try:
        result = move_to_postgres(data_dir / DB_FILE, data_dir / CONFIG_FILE, url)
    except (BadStoreUrl, ConfigError) as exc:
        _fail(exc.message, EXIT_USAGE)
        return
    except StoreUnreachable as exc:
        _fail(exc.message, EXIT_UNREACHABLE)
        return
    except TdsError as exc:
        _fail(exc.message, EXIT_REFUSED)
        return
    if as_json:
        _print_json({"store": result.store, "tables": result.tables, "rows": sum(result.tables.values()),
                     "chainHeadsVerified": result.chain_heads, "config": str(result.config_file),
                     "configLine": result.config_line, "sqlite": str(result.database)})
        return
    width = max((len(t) for t in result.tables), default=0)
    for table, count in result.tables.items():
        click.echo(f"{table.ljust(width)}  {count}")
    click.echo(f"{result.chain_heads} chain head{'' if result.chain_heads == 1 else 's'} verified")
    click.echo(f"moved to {result.store}")
    click.echo(f"wrote {result.config_line} at the top of {result.config_file}")
    click.echo(f"{result.database} is left as it was: a copy of the data as moved (the node no longer writes it)")
    click.echo(f"start the node: tds serve --dir {data_dir}")


@main.group()
def peer() -> None:
    """Peers: verify who they are."""


@peer.command("verify")
@click.argument("peer_ref", metavar="PEER")
@json_option
@node_options
def peer_verify(peer_ref: str, as_json: bool, data_dir: Path | None, node_url: str | None, token: str | None) -> None:
    """Handshake with PEER (a node URL or a did:web) and verify its signed self-description."""

    async def go() -> dict[str, Any]:
        async with _client(data_dir, node_url, token) as client:
            return await client.verify_peer(peer_ref)  # type: ignore[no-any-return]

    result = _run(go())
    p = result["peer"]
    shown = _call(data_dir, node_url, token, lambda c: c.peer_claims(p["id"]))
    if as_json:
        _print_json({**result, "claims": shown})
        return
    click.echo(f"verified {p['legalName']} ({p['region']}, self-asserted) {p['id']}")
    click.echo(f"  DSP endpoint {result['dspEndpoint']}")
    for claims in shown:  # the credentials it presented in the handshake, if any
        for line in claims_lines(claims):
            click.echo(line)


@peer.command("add")
@click.argument("peer_ref", metavar="PEER")
@json_option
@node_options
def peer_add(peer_ref: str, as_json: bool, data_dir: Path | None, node_url: str | None, token: str | None) -> None:
    """Verify PEER (a node URL or a did:web) by handshake and add it to the directory; gossip does the rest."""
    entry = _call(data_dir, node_url, token, lambda c: c.add_peer(peer_ref))
    if as_json:
        _print_json(entry)
        return
    click.echo(f"added {entry['legalName']} ({entry['region']}, self-asserted) {entry['did']}")
    click.echo(f"  DSP endpoint {entry['dspEndpoint']}")


def _directory_line(e: dict[str, Any]) -> str:
    claims = e.get("claims") or {}
    verified = [f"verified region {claims['verifiedRegion']}"] if claims.get("verifiedRegion") else []
    verified += [f"member of {space}" for space in claims.get("memberships", [])]
    extra = f"  [{'; '.join(verified)}]" if verified else ""
    return (f"{e['did']}  {e['legalName']}  {e['region']} (self-asserted)  from {e['learnedFrom']}  "
            f"seen {e['lastSeen']}{extra}")


@peer.command("list")
@node_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def peer_list(data_dir: Path | None, node_url: str | None, token: str | None, as_json: bool) -> None:
    """The participants this participant knows of: the peer directory (handshakes, bootstrap peers, gossip)."""
    rows = _call(data_dir, node_url, token, lambda c: c.directory())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("the directory is empty (try: tds peer add URL, or [discovery] bootstrap in tds.toml)")
    for e in rows:
        click.echo(_directory_line(e))


@main.command()
@node_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def peers(data_dir: Path | None, node_url: str | None, token: str | None, as_json: bool) -> None:
    """List the peers this participant has verified."""

    async def go() -> list[dict[str, Any]]:
        async with _client(data_dir, node_url, token) as client:
            return await client.peers()  # type: ignore[no-any-return]

    rows = _run(go())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no verified peers yet (try: tds peer verify URL)")
    for p in rows:
        click.echo(f"{p['did']}  {p['legalName']}  {p['region']} (self-asserted)  verified {p['verifiedAt']}")


def _call(data_dir: Path | None, node_url: str | None, token: str | None, fn: Callable[[Any], Awaitable[T]],
          *, admin: bool = False) -> T:
    async def go() -> T:
        async with _client(data_dir, node_url, token, admin=admin) as client:
            return await fn(client)

    return _run(go())


@main.command()
@json_option
@node_options
def whoami(as_json: bool, data_dir: Path | None, node_url: str | None, token: str | None) -> None:
    """Who the token acts as on the node: its participant's name, DID, DSP endpoint, DID document, key
    fingerprints and the token's application; or that it is the node's admin token (no participant). A first
    check of a remote node: `tds whoami --node https://HOST:8182 --token T --ca ca.pem`."""
    from connector.client import ClientError

    async def go() -> tuple[str, dict[str, Any] | None]:
        async with _client(data_dir, node_url, token) as client:
            try:
                return client.base_url, await client.participant()
            except ClientError as exc:
                if exc.status != 404:
                    raise
                # No participant: the admin token, if an admin route takes it (else the answer stands).
                try:
                    await client.participants()
                except ClientError:
                    raise exc from None
                return client.base_url, None

    url, me = _run(go())
    if as_json:
        _print_json({"managementApi": url, "admin": me is None, "participant": me})
        return
    if me is None:
        click.echo(f"the node's admin token (no participant) at {url}")
        return
    rows = [
        ("participant", f"{me['name']} ({me['legalName']}, {me['region']})"),
        ("DID", me["did"]),
        ("DSP endpoint", me["dspEndpoint"]),
        ("DID document", me["didDocument"] or "(did:key: derived from the DID)"),
        *((f"{kind} key", fingerprint) for kind, fingerprint in
          (("Ed25519", me["fingerprints"].get("ed25519")), ("X25519", me["fingerprints"].get("x25519")))
          if fingerprint),
        ("application", me["application"]),
        ("management API", url),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key.ljust(width)}  {value}")


@main.group()
def participant() -> None:
    """Participants this node hosts (needs the node's admin token: DIR/admin.token or --token)."""


@participant.command("add")
@click.argument("name")
@click.option("--legal-name", required=True, help="Legal name shown in the self-description.")
@click.option("--region", required=True, help="ISO 3166 region, e.g. CN-GD.")
@click.option("--industry", default="", help="Industry named in the self-description.")
@click.option("--contact", default="", help="Contact named in the self-description.")
@click.option("--did", help="A did:web the participant controls (default: a did:web under this node).")
@json_option
@node_options
def participant_add(name: str, legal_name: str, region: str, industry: str, contact: str, did: str | None,
                    as_json: bool, data_dir: Path | None, node_url: str | None, token: str | None) -> None:
    """Host participant NAME on the running node: own DID, keys, endpoints and a first token."""
    added = _call(data_dir, node_url, token, lambda c: c.add_participant(
        name, legal_name=legal_name, region=region, industry=industry, contact=contact, did=did), admin=True)
    if as_json:
        _print_json(added)
        return
    click.echo(f"participant {added['name']} added: {added['did']}")
    click.echo(f"  DSP endpoint  {added['dspEndpoint']}")
    click.echo(f"  DID document  {added['didDocument']}")
    click.echo(f"  token         {added['token']}")
    click.echo("  (shown once: hand it to the participant, who should create its own with `tds token create` "
               "and revoke this one)")


@participant.command("list")
@click.option("--json", "as_json", is_flag=True)
@node_options
def participant_list(as_json: bool, data_dir: Path | None, node_url: str | None, token: str | None) -> None:
    """List the participants this node hosts."""
    rows = _call(data_dir, node_url, token, lambda c: c.participants(), admin=True)
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        state = f"  suspended since {row['suspendedAt']}" if row.get("state") == "suspended" else ""
        share = f"  platform share {row['platformShare']}%" if row.get("platformShare") else ""
        click.echo(f"{row['name']}  {row['did']}  {row['legalName']}  {row['region']}{share}{state}")


@participant.command("suspend")
@click.argument("name")
@click.option("--reason", default="", help="Why (shown to the participant's own tokens, never to peers).")
@json_option
@node_options
def participant_suspend(name: str, reason: str, as_json: bool, data_dir: Path | None, node_url: str | None,
                        token: str | None) -> None:
    """Suspend participant NAME: its DSP endpoints answer 403, its tokens are refused, its negotiations,
    transfers and receipts stop. Nothing is deleted; `tds participant resume NAME` serves it again."""
    done = _call(data_dir, node_url, token, lambda c: c.suspend_participant(name, reason), admin=True)
    _done(done, f"participant {done['name']} suspended ({done['did']})", as_json)


@participant.command("resume")
@click.argument("name")
@json_option
@node_options
def participant_resume(name: str, as_json: bool, data_dir: Path | None, node_url: str | None,
                       token: str | None) -> None:
    """Serve a suspended participant NAME again; its processes resume where they stopped."""
    done = _call(data_dir, node_url, token, lambda c: c.resume_participant(name), admin=True)
    _done(done, f"participant {done['name']} resumed ({done['did']})", as_json)


@participant.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@node_options
def participant_remove(name: str, yes: bool, as_json: bool, data_dir: Path | None, node_url: str | None,
                       token: str | None) -> None:
    """Stop hosting participant NAME and delete all it has on the node: tokens, catalog, negotiations,
    agreements, transfers, usage log, keys, files/NAME/ and its vault. Irreversible."""
    if not yes:
        click.confirm(f"Delete participant {name} and everything it has on this node?", abort=True, err=as_json)
    removed = _call(data_dir, node_url, token, lambda c: c.remove_participant(name), admin=True)
    if as_json:
        _print_json(removed)
        return
    click.echo(f"participant {removed['name']} removed ({removed['did']}): {removed['removedRows']} rows, "
               f"folders {', '.join(removed['removedFolders']) or 'none'}")


@participant.command("share")
@click.argument("name")
@click.argument("percent")
@json_option
@node_options
def participant_share(name: str, percent: str, as_json: bool, data_dir: Path | None, node_url: str | None,
                      token: str | None) -> None:
    """Set the platform's share (PERCENT, 0 to 100, e.g. 10 or 2.5) of what hosted participant NAME earns as a
    provider: its statements from now on show the split, and `tds statements --host-report` sums it."""
    from decimal import Decimal

    from usage_policies.pricing import PricingError, parse_decimal

    try:
        if parse_decimal(percent.removesuffix("%"), "PERCENT") > Decimal(100):
            raise PricingError("PERCENT must lie between 0 and 100")
    except PricingError as exc:
        _fail(str(exc))
    done = _call(data_dir, node_url, token, lambda c: c.set_platform_share(name, percent.removesuffix("%")),
                 admin=True)
    _done(done, f"participant {done['name']}: platform share {done['platformShare']}%", as_json)


@main.group()
def keys() -> None:
    """A participant's signing and key-agreement keys."""


@keys.command("rotate")
@click.option("--participant", "name", help="A hosted participant's keys (needs the node's admin token: "
              "DIR/admin.token or --token); default: the token's own participant.")
@json_option
@node_options
def keys_rotate(name: str | None, as_json: bool, data_dir: Path | None, node_url: str | None,
                token: str | None) -> None:
    """Replace the participant's Ed25519 signing key and X25519 key-agreement key with new ones, on the running
    node (which switches at once). The DID document lists the new keys as current and keeps the old public keys,
    so that agreements, manifests and receipts signed before still verify; the vault's data keys are re-wrapped
    under the new key. Peers fetch the new DID document at the next request signed with the new key."""
    done = _call(data_dir, node_url, token, lambda c: c.rotate_keys(name), admin=name is not None)
    if as_json:
        _print_json(done)
        return
    click.echo(f"keys of {done['name']} rotated ({done['did']})")
    click.echo(f"  signing key        {done['signingKey']}  ({done['fingerprints']['ed25519']})")
    click.echo(f"  key-agreement key  {done['agreementKey']}  ({done['fingerprints']['x25519']})")
    click.echo(f"  kept for verifying {', '.join(done['retiredKeys'])}")
    if done["unopenedDataKeys"]:
        click.echo(f"  {done['unopenedDataKeys']} vault data keys opened under none of its keys; "
                   f"old key-agreement keys kept: {', '.join(done['oldKeyAgreementKeysKept'])}")


@main.group()
def token() -> None:
    """This participant's management tokens, one per application; or, with --scope metrics, the node's
    metrics tokens (for a Prometheus scraper; needs the admin token: DIR/admin.token or --token)."""


#: ``--scope participant``: the participant's own tokens; ``--scope metrics``: tokens that read only ``/metrics``.
SCOPE = click.option("--scope", type=click.Choice(["participant", "metrics"]), default="participant",
                     show_default=True, help="metrics: a token that reads the node's /metrics and nothing else "
                                             "(made with the admin token).")


@token.command("create")
@click.argument("application")
@SCOPE
@json_option
@node_options
def token_create(application: str, scope: str, as_json: bool, data_dir: Path | None, node_url: str | None,
                 token: str | None) -> None:
    """Create a token for APPLICATION; it is printed once and only its hash is kept."""
    if scope == "metrics":
        created = _call(data_dir, node_url, token, lambda c: c.create_metrics_token(application), admin=True)
    else:
        created = _call(data_dir, node_url, token, lambda c: c.create_token(application))
    if as_json:
        _print_json(created)
        return
    if scope == "metrics":
        click.echo(f"metrics token {created['id']} for {created['application']} (reads /metrics on the "
                   "management listener, nothing else):")
    else:
        click.echo(f"token {created['id']} for {created['application']}:")
    click.echo(created["token"])


@token.command("list")
@click.option("--json", "as_json", is_flag=True)
@SCOPE
@node_options
def token_list(as_json: bool, scope: str, data_dir: Path | None, node_url: str | None, token: str | None) -> None:
    """List this participant's tokens, or the node's metrics tokens (ids and applications, never the values)."""
    if scope == "metrics":
        rows = _call(data_dir, node_url, token, lambda c: c.metrics_tokens(), admin=True)
    else:
        rows = _call(data_dir, node_url, token, lambda c: c.tokens())
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        state = f"revoked {row['revokedAt']}" if row.get("revokedAt") else "active"
        click.echo(f"{row['id']}  {row['application']}  created {row['createdAt']}  {state}")


@token.command("revoke")
@click.argument("token_id", metavar="ID")
@SCOPE
@json_option
@node_options
def token_revoke(token_id: str, scope: str, as_json: bool, data_dir: Path | None, node_url: str | None,
                 token: str | None) -> None:
    """Revoke token ID at once."""
    if scope == "metrics":
        _call(data_dir, node_url, token, lambda c: c.revoke_metrics_token(token_id), admin=True)
    else:
        _call(data_dir, node_url, token, lambda c: c.revoke_token(token_id))
    _done({"id": token_id, "revoked": True}, f"token {token_id} revoked", as_json)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _done(result: dict[str, Any], line: str, as_json: bool) -> None:
    """What a command that changes something prints: *result* as JSON, else the readable *line*."""
    if as_json:
        _print_json(result)
    else:
        click.echo(line)


@main.group()
def asset() -> None:
    """Assets: the datasets this participant offers."""


@asset.command("add")
@click.argument("asset_id", metavar="ID")
@click.option("--title", default="")
@click.option("--description", default="")
@click.option("--content-type", default="application/octet-stream", show_default=True)
@click.option("--data-class", type=click.Choice(["general", "important", "core", "personal"]), default="general",
              show_default=True)
@click.option("--keyword", "keywords", multiple=True)
@click.option("--file", "file_path", type=click.Path(path_type=Path),
              help="Where the bytes are (a local file under the node's data roots).")
@click.option("--url", help="Or: the provider's own HTTP backend to fetch the bytes from (snapshotted now).")
@click.option("--sandbox", is_flag=True,
              help="Offer the --file CSV for computation only: it is imported into the data sandbox's read-only "
                   "table, consumers send aggregate queries (tds query), and its data is never transferred.")
@click.option("--bounds", "bounds", multiple=True, metavar="COLUMN=LOW:HIGH",
              help="With --sandbox: the bounds of a numeric column (repeatable), e.g. defect_rate=0:1; values are "
                   "clipped to them, and sums and averages under a privacy budget need them.")
@click.option("--columns", help="With --sandbox: the columns a query may reference, comma-separated (default: all).")
@json_option
@node_options
def asset_add(asset_id: str, title: str, description: str, content_type: str, data_class: str,
              keywords: tuple[str, ...], file_path: Path | None, url: str | None, sandbox: bool,
              bounds: tuple[str, ...], columns: str | None, as_json: bool, data_dir: Path | None,
              node_url: str | None, token: str | None) -> None:
    """Register an asset (with --sandbox: a CSV offered for computation only)."""
    body: dict[str, Any] = {"id": asset_id, "title": title, "description": description, "contentType": content_type,
                            "dataClass": data_class, "keywords": list(keywords)}
    if file_path is not None and url is not None:
        _fail("give --file or --url, not both")
    if file_path is not None:
        body["dataAddress"] = {"type": "File", "path": str(file_path.resolve())}
    if url is not None:
        body["dataAddress"] = {"type": "HttpData", "url": url}
    if sandbox:
        if file_path is None:
            _fail("--sandbox takes the CSV as --file")
        body.update(sandbox=True, sandboxBounds=_bounds(bounds))
        if columns is not None:
            body["sandboxColumns"] = [c.strip() for c in columns.split(",") if c.strip()]
    elif bounds or columns is not None:
        _fail("--bounds and --columns describe a sandbox asset: add --sandbox")
    added = _call(data_dir, node_url, token, lambda c: c.add_asset(body))
    if sandbox and not as_json:
        schema = (added.get("sandbox") or {}).get("schema") or {}
        shown = ", ".join(f"{c['name']} ({c['type']})" for c in schema.get("columns", []))
        click.echo(f"asset {asset_id} added for computation only: about {schema.get('rows_rounded')} rows; "
                   f"columns {shown}")
        return
    _done(added, f"asset {asset_id} added", as_json)


def _bounds(items: tuple[str, ...]) -> dict[str, list[float]]:
    """``--bounds COLUMN=LOW:HIGH`` options as the API's ``sandboxBounds``."""
    out: dict[str, list[float]] = {}
    for item in items:
        name, _, span = item.partition("=")
        low, _, high = span.partition(":")
        try:
            out[name.strip()] = [float(low), float(high)]
        except ValueError:
            _fail(f"--bounds {item!r}: give COLUMN=LOW:HIGH with two numbers, e.g. defect_rate=0:1")
        if not name.strip():
            _fail(f"--bounds {item!r}: name the column (COLUMN=LOW:HIGH)")
    return out


#: ``tds policy add``'s price options: option → what the price is paid for (``usage_policies.pricing.Basis``).
PRICE_BASES = {"--price-per-use": "use", "--price-per-query": "query", "--price-per-gb": "gigabyte",
               "--price-per-period": "period"}


def price_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options of a price (``usage_policies.templates.price_duty``), passed on as keyword arguments."""
    options = [
        click.option("--price-per-use", metavar="AMOUNT",
                     help="Price of each permitted use, e.g. 2.50 (with --currency)."),
        click.option("--price-per-query", metavar="AMOUNT",
                     help="With --sandbox: price of each query the data sandbox answers."),
        click.option("--price-per-gb", metavar="AMOUNT", help="Price of each GB (10^9 bytes) transferred."),
        click.option("--price-per-period", metavar="AMOUNT",
                     help="A subscription: price of each billing period begun."),
        click.option("--currency", metavar="CODE", help="The price's currency, e.g. CNY (required with a price)."),
        click.option("--tier", "tiers", multiple=True, metavar="FROM:PRICE",
                     help="Graduated price within one statement (repeatable): 1000:2.00 makes each unit after "
                          "the 1,000th cost 2.00."),
        click.option("--rounding", metavar="'QUANTUM MODE'",
                     help="How each statement line is rounded, e.g. '0.01 half-up' (the default); modes half-up, "
                          "half-even, up, down, ceiling, floor."),
        click.option("--billing-period", type=click.Choice(["P1M", "P1W", "P1D"]),
                     help="How often statements settle the price: months (P1M, the default), ISO weeks, days (UTC)."),
        click.option("--prepaid", is_flag=True,
                     help="Due before use: every use is denied until the payment is reported (instead of being "
                          "settled afterwards by the period's statement)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def price_duty_of(*, sandbox: bool, price_per_use: str | None, price_per_query: str | None,
                  price_per_gb: str | None, price_per_period: str | None, currency: str | None,
                  tiers: tuple[str, ...], rounding: str | None, billing_period: str | None,
                  prepaid: bool) -> dict[str, Any] | None:
    """The ``compensate`` duty ``tds policy add``'s price options make (None: no price), or one readable line
    naming the option that is wrong (exit 2)."""
    from usage_policies.templates import price_duty

    amounts = {"--price-per-use": price_per_use, "--price-per-query": price_per_query,
               "--price-per-gb": price_per_gb, "--price-per-period": price_per_period}
    given = {name: amount for name, amount in amounts.items() if amount is not None}
    terms = {"--currency": currency, "--tier": tiers or None, "--rounding": rounding,
             "--billing-period": billing_period, "--prepaid": prepaid or None}
    if not given:
        named = [name for name, value in terms.items() if value is not None]
        if named:
            _fail(f"{', '.join(named)} {'describe' if len(named) > 1 else 'describes'} a price: add "
                  "--price-per-use, --price-per-query, --price-per-gb or --price-per-period AMOUNT")
        return None
    if len(given) > 1:
        _fail(f"give one price per policy, not {' and '.join(given)}")
    [(option, amount)] = given.items()
    if not currency or not currency.strip() or len(currency) > 64 or any(c.isspace() for c in currency):
        _fail(f"{option} needs --currency CODE (e.g. CNY)" if not currency else
              f"--currency must be a code such as CNY, not {currency!r}")
    if option == "--price-per-query" and not sandbox:
        _fail("--price-per-query prices the queries of the data sandbox: add --sandbox (and its options)")
    if prepaid and (tiers or rounding or billing_period):
        named = [name for name in ("--tier", "--rounding", "--billing-period") if terms[name] is not None]
        _fail(f"{', '.join(named)} {'shape' if len(named) > 1 else 'shapes'} the statements that settle a "
              "post-paid price; a --prepaid price is due before use: leave them out")
    try:
        return price_duty(amount, str(currency), per=PRICE_BASES[option], period=billing_period or "P1M",
                          rounding=rounding or "0.01 half-up", tiers=tiers, prepaid=prepaid)
    except ValueError as exc:
        message = str(exc)
    for word, name in (("the price must", f"{option} must"), ("rounding must", "--rounding must"),
                       ("the rounding quantum", "--rounding's quantum"), ("a price tier", "--tier: a price tier"),
                       ("a tier's", "--tier: a tier's"), ("price tiers start", "--tier: price tiers start")):
        message = message.replace(word, name)
    _fail(message)
    raise AssertionError  # unreachable


@main.group()
def policy() -> None:
    """Policies (ODRL): from a JSON-LD file or built from the common templates."""


@policy.command("add")
@click.argument("policy_id", metavar="ID")
@click.option("--file", "file_path", type=click.Path(exists=True, path_type=Path), help="ODRL JSON-LD file.")
@click.option("--purpose", "purposes", multiple=True, help="Allowed purpose (repeatable).")
@click.option("--max-uses", type=int, help="At most N uses.")
@click.option("--for-duration", help="Use within this ISO 8601 duration of the first use, e.g. P30D.")
@click.option("--region", "regions", multiple=True,
              help="Only participants that say they are in this region (e.g. CN-GD; self-asserted, in their "
                   "self-description: --verified-region for a region a trusted issuer vouches for).")
@click.option("--verified-region", "verified_regions", multiple=True,
              help="Only participants whose region a credential by an issuer trusted for regions places in this "
                   "region (e.g. CN-GD; repeatable).")
@click.option("--member-of", "spaces", multiple=True,
              help="Only members of this data space, by a credential from an issuer trusted for it (repeatable: "
                   "any of them).")
@click.option("--no-export-outside", help="The data may not leave this region (e.g. CN; the recipient's verified "
                                          "region).")
@click.option("--consumer", "consumers", multiple=True, help="Only this participant DID (repeatable).")
@click.option("--log-uses", is_flag=True, help="Duty: log each use.")
@click.option("--inform", is_flag=True, help="Duty: inform the provider of each use.")
@click.option("--sandbox", is_flag=True,
              help="Computation only (the data sandbox): the consumer sends aggregate queries (tds query) and gets "
                   "results for groups of at least --min-group-size records, never the data. Free-form queries "
                   "need a privacy budget (--epsilon-per-query and --epsilon-total); without one, only the "
                   "--query-template queries run.")
@click.option("--query-columns", metavar="A,B", help="With --sandbox: the columns a query may reference, "
                                                     "comma-separated (default: all the asset offers).")
@click.option("--aggregates", metavar="F,G", help="With --sandbox: the aggregates a query may use, comma-separated, "
                                                  "of count, sum, avg, min, max, stddev (default: all).")
@click.option("--min-group-size", type=int, metavar="K",
              help="With --sandbox: results only for groups of at least K records (default 10).")
@click.option("--epsilon-per-query", type=float, metavar="E",
              help="With --sandbox: the differential-privacy budget each query spends (noise added to results).")
@click.option("--epsilon-total", type=float, metavar="E",
              help="With --sandbox: the differential-privacy budget of the whole agreement.")
@click.option("--max-queries", type=int, metavar="N", help="With --sandbox: at most N queries.")
@click.option("--query-template", "query_templates", multiple=True, type=click.Path(exists=True, path_type=Path),
              metavar="FILE.json", help='With --sandbox: a query the consumer may run by its id (repeatable): '
                                        '{"id", "sql" with :named parameters, "parameters": {name: "integer" | '
                                        '"real" | "text"}}.')
@price_options
@json_option
@node_options
def policy_add(policy_id: str, file_path: Path | None, purposes: tuple[str, ...], max_uses: int | None,
               for_duration: str | None, regions: tuple[str, ...], verified_regions: tuple[str, ...],
               spaces: tuple[str, ...], no_export_outside: str | None,
               consumers: tuple[str, ...], log_uses: bool, inform: bool, sandbox: bool, query_columns: str | None,
               aggregates: str | None, min_group_size: int | None, epsilon_per_query: float | None,
               epsilon_total: float | None, max_queries: int | None, query_templates: tuple[Path, ...],
               as_json: bool, data_dir: Path | None, node_url: str | None, token: str | None,
               **price_given: Any) -> None:
    """Add a policy. Without --file and without template options: allow use. With --sandbox: computation only.
    With a price (--price-per-use 2.50 --currency CNY, …): the consumer pays for each use, query, GB or billing
    period; post-paid, settled by a statement each billing period (tds statements), or --prepaid (due before
    use)."""
    price = price_duty_of(sandbox=sandbox, **price_given)
    if price is not None and file_path is not None:
        _fail("a price is added to a policy built from options; with --file, write the compensate duty in the file")
    sandbox_options = {"--query-columns": query_columns, "--aggregates": aggregates,
                       "--min-group-size": min_group_size, "--epsilon-per-query": epsilon_per_query,
                       "--epsilon-total": epsilon_total, "--max-queries": max_queries,
                       "--query-template": query_templates or None}
    use_options = {"--purpose": purposes, "--max-uses": max_uses, "--for-duration": for_duration,
                   "--region": regions, "--verified-region": verified_regions, "--member-of": spaces,
                   "--no-export-outside": no_export_outside, "--consumer": consumers, "--log-uses": log_uses,
                   "--inform": inform}
    if sandbox:
        given = [name for name, value in use_options.items() if value]
        if file_path is not None:
            _fail("give --file or --sandbox (with its options), not both")
        if given:
            _fail(f"--sandbox makes a computation-only policy: leave out {', '.join(given)}"
                  + (" (for queries: --max-queries)" if max_uses is not None else ""))
        body = _sandbox_policy(query_columns, aggregates, min_group_size, epsilon_per_query, epsilon_total,
                               max_queries, query_templates, price)
    elif any(value is not None for value in sandbox_options.values()):
        named = ", ".join(name for name, value in sandbox_options.items() if value is not None)
        _fail(f"{named} describe a computation-only policy: add --sandbox")
        return
    elif file_path is not None:
        try:
            body = jsonbound.loads(file_path.read_text())
        except ValueError as exc:
            _fail(f"{file_path} is not JSON: {exc}")
            return
    else:
        from usage_policies.templates import policy_from_options

        try:
            body = policy_from_options(purposes, max_uses, for_duration, regions, no_export_outside, consumers,
                                       log_uses, inform, verified_regions=verified_regions, spaces=spaces,
                                       price=price)
        except ValueError as exc:
            _fail(str(exc))
            return
    added = _call(data_dir, node_url, token, lambda c: c.add_policy(policy_id, body))
    _done(added, f"policy {policy_id} added", as_json)


#: The builder's words for the values, as ``tds policy add --sandbox`` names them.
_SANDBOX_WORDS = (("epsilon_per_query", "--epsilon-per-query"), ("epsilon_total", "--epsilon-total"),
                  ("min_group_size", "--min-group-size"), ("max_queries", "--max-queries"),
                  ("give templates", "give --query-template FILE.json"), ("columns must", "--query-columns must"),
                  ("aggregates must", "--aggregates must"),
                  ("epsilon must be", "--epsilon-per-query and --epsilon-total must each be"))


def _sandbox_policy(columns: str | None, aggregates: str | None, min_group_size: int | None,
                    epsilon_per_query: float | None, epsilon_total: float | None, max_queries: int | None,
                    template_files: tuple[Path, ...], price: dict[str, Any] | None = None) -> dict[str, Any]:
    """The policy ``tds policy add --sandbox`` builds (``usage_policies.templates.sandbox``), or one readable line
    naming what is wrong, in the options' words."""
    from usage_policies.templates import sandbox_from_options

    templates: list[tuple[Path, Any]] = []
    for path in template_files:
        try:
            template = jsonbound.loads(path.read_text())
        except (OSError, ValueError) as exc:
            _fail(f"--query-template {path}: not a JSON file ({exc})")
        if not isinstance(template, dict):
            _fail(f'--query-template {path}: a query template is a JSON object {{"id", "sql", "parameters"}}')
        templates.append((path, template))
    ids = [template.get("id") for _, template in templates]
    repeated = next((ident for n, ident in enumerate(ids) if ident in ids[:n]), None)
    if repeated is not None:
        _fail(f"--query-template: two templates have the id {repeated!r}; each needs an id of its own")
    if columns is not None and not _names(columns):
        _fail("--query-columns names no column: give the columns a query may reference, e.g. region,defect_rate")

    def build(chosen: list[dict[str, Any]]) -> dict[str, Any]:
        return sandbox_from_options(
            columns=_names(columns), aggregates=_names(aggregates),
            min_group_size=10 if min_group_size is None else min_group_size, epsilon_per_query=epsilon_per_query,
            epsilon_total=epsilon_total, templates=chosen, max_queries=max_queries, price=price)

    try:
        return build([template for _, template in templates])
    except ValueError as exc:
        message = str(exc)
    if message.startswith("a query template"):  # which file: the one that fails on its own
        for path, template in templates:
            try:
                build([template])
            except ValueError as alone:
                if str(alone).startswith("a query template"):
                    message = f"--query-template {path}: {alone}"
                    break
    for word, option in _SANDBOX_WORDS:
        message = message.replace(word, option)
    _fail(message)
    raise AssertionError  # unreachable


def _names(text: str | None) -> list[str] | None:
    """A comma-separated option as a list (None: not given)."""
    return None if text is None else [name.strip() for name in text.split(",") if name.strip()]


@main.group()
def offer() -> None:
    """Offers (contract definitions): assets offered under an access policy and a contract policy."""


@offer.command("add")
@click.argument("offer_id", metavar="ID")
@click.option("--access", "access_policy", required=True, help="Policy deciding who sees the offer.")
@click.option("--contract", "contract_policy", required=True, help="Usage policy agreed for the data.")
@click.option("--asset", "assets", multiple=True, required=True, help="Asset id (repeatable).")
@json_option
@node_options
def offer_add(offer_id: str, access_policy: str, contract_policy: str, assets: tuple[str, ...], as_json: bool,
              data_dir: Path | None, node_url: str | None, token: str | None) -> None:
    """Offer assets under an access policy and a contract policy."""
    added = _call(data_dir, node_url, token, lambda c: c.add_contract_definition(
        offer_id, access_policy_id=access_policy, contract_policy_id=contract_policy, assets=list(assets)))
    _done(added, f"offer {offer_id} added for {', '.join(assets)}", as_json)


def _entry_commands(group: click.Group, collection: str, noun: str, line: Callable[[dict[str, Any]], str],
                    deleting: str) -> None:
    """``list`` and ``delete ID`` in *group*, for the management API's *collection* of catalog entries."""
    plural = "policies" if noun == "policy" else f"{noun}s"

    @group.command("list", help=f"List this participant's {plural}.")
    @json_option
    @node_options
    def list_command(as_json: bool, data_dir: Path | None, node_url: str | None, token: str | None) -> None:
        rows = _call(data_dir, node_url, token, lambda c: c.entries(collection))
        if as_json:
            _print_json(rows)
            return
        if not rows:
            click.echo(f"no {plural} yet")
        for row in rows:
            click.echo(line(row))

    @group.command("delete", help=f"Delete {noun} ID. {deleting} Exits 1 if it is refused (409), 2 if there "
                                  f"is no such {noun}.")
    @click.argument("entry_id", metavar="ID")
    @json_option
    @node_options
    def delete_command(entry_id: str, as_json: bool, data_dir: Path | None, node_url: str | None,
                       token: str | None) -> None:
        _call(data_dir, node_url, token, lambda c: c.delete_entry(collection, entry_id))
        _done({"id": entry_id, "deleted": True}, f"{noun} {entry_id} deleted", as_json)


def _asset_line(row: dict[str, Any]) -> str:
    """id, data class, content type, where the bytes are (their kind, not the path or URL) and the title."""
    address = row.get("dataAddress") or {}
    if not address:
        data = "no data"
    elif address.get("origin"):
        data = "HttpData snapshot"
    else:
        data = str(address.get("type", "data"))
    title = f"  \"{row['title']}\"" if row.get("title") else ""
    return f"{row['id']}  {row['dataClass']:9}  {row['contentType']}  {data}{title}"


def _rules_text(policy: dict[str, Any]) -> str:
    """A policy's rules in one line: ``permission use if purpose eq R&D; duty …``."""
    rules = []
    for kind in ("permission", "prohibition", "obligation"):
        for rule in _items(policy.get(kind)):
            text = f"{kind} {_text(rule.get('action'))}"
            constraints = _constraints_text(rule)
            rules.append(text + (f" if {constraints}" if constraints else ""))
            rules += _price_words(rule) if kind == "permission" else []
    return "; ".join(rules) or "no rules"


_entry_commands(asset, "assets", "asset", _asset_line,
                "Refused while an offer lists it, or an agreement (not revoked) or a negotiation not yet agreed "
                "needs its data: the refusal names them.")
_entry_commands(policy, "policies", "policy", lambda row: f"{row['id']}  {_rules_text(row['policy'])}",
                "Refused while an offer names it (the refusal names them); agreements keep their own copy of the "
                "terms.")
_entry_commands(offer, "contract-definitions", "offer",
                lambda row: f"{row['id']}  access {row['accessPolicyId']}  contract {row['contractPolicyId']}  "
                            f"assets {', '.join(row['assets'])}",
                "Peers no longer see it; agreements made under it keep their own copy of its terms.")


@main.command()
@click.argument("peer_ref", metavar="PEER")
@click.option("--json", "as_json", is_flag=True,
              help="Print the catalog as JSON (also the default when stdout is not a terminal).")
@node_options
def catalog(peer_ref: str, as_json: bool, data_dir: Path | None, node_url: str | None, token: str | None) -> None:
    """Show PEER's catalog (what it offers to this participant): on a terminal, one line per dataset, offer and
    permission; piped or with --json, the catalog as JSON (DSP's compacted JSON-LD)."""
    result = _call(data_dir, node_url, token, lambda c: c.catalog(peer_ref))
    if as_json or not sys.stdout.isatty():
        _print_json(result)
        return
    for line in catalog_lines(result):
        click.echo(line)


def catalog_lines(result: dict[str, Any]) -> list[str]:
    """A peer's catalog as readable lines: each dataset, its offers and their permissions."""
    lines = [f"catalog of {_text(result.get('participantId'))}"]
    datasets = _items(result.get("dataset"))
    if not datasets:
        lines.append("  (nothing offered to you)")
    for dataset in datasets:
        title = _text(dataset.get("dct:title", ""))
        lines.append(f"  dataset {_text(dataset.get('@id'))}  {title}")
        for offer_ in _items(dataset.get("hasPolicy")):
            lines.append(f"    offer {_text(offer_.get('@id'))}")
            for rule in _items(offer_.get("permission")):
                constraints = _constraints_text(rule)
                lines.append(f"      permission {_text(rule.get('action'))}"
                             + (f" if {constraints}" if constraints else ""))
                lines += [f"        price: {sentence}" for sentence in _price_words(rule)]
    return lines


def _price_words(rule: dict[str, Any]) -> list[str]:
    """The prices (``compensate`` duties) of a permission in plain words (``usage_policies.words``)."""
    from usage_policies.words import describe

    out: list[str] = []
    for duty in _items(rule.get("duty")):
        if isinstance(duty, dict) and _text(duty.get("action")).rsplit("/", 1)[-1].rsplit(":", 1)[-1] == "compensate":
            out += describe({"permission": [{"action": "use", "duty": [duty]}]}, "en")[1:]
    return out


def _items(value: Any) -> list[Any]:
    """A JSON-LD property's values as a list (compacted JSON-LD writes a single value without the list)."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _text(value: Any) -> str:
    """A JSON-LD value in words: a string as it is, a value or node object by its ``@value`` or ``@id``, a list
    joined with commas, anything else as compact JSON (never a Python repr)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        for key in ("@value", "@id"):
            if key in value:
                return _text(value[key])
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _constraints_text(rule: dict[str, Any]) -> str:
    """A rule's constraints as ``purpose isAnyOf [R&D, QA], count lteq 3`` (those with a left operand)."""

    def right(value: Any) -> str:
        return f"[{_text(value)}]" if isinstance(value, list) else _text(value)

    return ", ".join(f"{_text(c.get('leftOperand'))} {_text(c.get('operator'))} {right(c.get('rightOperand'))}"
                     for c in _items(rule.get("constraint")) if isinstance(c, dict) and "leftOperand" in c)


def _age(seconds: float) -> str:
    """``42s``, ``5m``, ``3h``, ``2d``: how long ago an offer was fetched."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


@main.command()
@click.argument("words", nargs=-1)
@click.option("--region", default="", help="The provider's region as it states it (CN finds CN-GD too).")
@click.option("--provider", default="", help="The provider's DID or legal name.")
@click.option("--data-class", type=click.Choice(["", "general", "important", "core", "personal"]), default="")
@click.option("--industry", default="", help="The provider's industry as it states it.")
@click.option("--feature", "features", multiple=True,
              help="A property of the offer's policy, e.g. no-export-restriction, purpose:R&D (repeatable).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 200))
@click.option("--offset", default=0, show_default=True, type=click.IntRange(0))
@click.option("--crawl", is_flag=True, help="Crawl the known peers' catalogs first.")
@click.option("--json", "as_json", is_flag=True)
@node_options
def search(words: tuple[str, ...], region: str, provider: str, data_class: str, industry: str,
           features: tuple[str, ...], limit: int, offset: int, crawl: bool, as_json: bool, data_dir: Path | None,
           node_url: str | None, token: str | None) -> None:
    """Search the offers the peers this participant knows show it (its catalog cache): one line per offer with
    the provider, how old the entry is, the dataset, the offer id (give it to `tds negotiate`) and its terms."""

    async def go(client: Any) -> dict[str, Any]:
        if crawl:
            await client.crawl()
        return await client.search(" ".join(words), region=region, provider=provider,  # type: ignore[no-any-return]
                                   data_class=data_class, industry=industry, features=features, limit=limit,
                                   offset=offset)

    result = _call(data_dir, node_url, token, go)
    if as_json:
        _print_json(result)
        return
    if not result["offers"]:
        click.echo("no offers found (the cache holds what known peers showed at the last crawl; try --crawl)")
    for o in result["offers"]:
        who = o["providerLegalName"] or o["providerDid"]
        where = f" ({o['providerRegion']})" if o["providerRegion"] else ""
        title = f" \"{o['title']}\"" if o["title"] else ""
        click.echo(f"{who}{where}  {_age(o['ageSeconds'])} ago  {o['datasetId']}{title}  offer {o['offerId']}  "
                   f"terms: {o['terms']}")
    shown = result["offset"] + len(result["offers"])
    if shown < result["total"]:
        click.echo(f"{shown} of {result['total']} shown (--offset {shown} for more)")


@main.command()
@click.argument("peer_ref", metavar="[PEER]")
@click.argument("offer_id", required=False)
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for a final state.")
@json_option
@node_options
def negotiate(peer_ref: str, offer_id: str | None, timeout: float, as_json: bool, data_dir: Path | None,
              node_url: str | None, token: str | None) -> None:
    """Negotiate OFFER_ID with PEER; wait for the final state and print it with the reason. With the offer id
    alone (from `tds search`), the peer is the offer's provider in the catalog cache. Exits 1 unless the
    negotiation ends FINALIZED (--json: the negotiation, with agreementId, is printed all the same)."""
    peer: str | None = peer_ref
    if offer_id is None:
        peer, offer_id = None, peer_ref

    async def go(client: Any) -> dict[str, Any]:
        started = await client.negotiate(peer, offer_id)
        return await client.negotiation(started["id"], wait_s=timeout)  # type: ignore[no-any-return]

    final = _call(data_dir, node_url, token, go)
    if as_json:
        agreed = final.get("agreement") if final["state"] == "FINALIZED" else None
        _print_json({"negotiationId": final["id"], "state": final["state"], "reason": final.get("reason", ""),
                     "agreementId": (agreed or {}).get("@id"), "negotiation": final})
        if final["state"] != "FINALIZED":
            sys.exit(EXIT_REFUSED)
        return
    click.echo(f"negotiation {final['id']}: {final['state']}")
    if final.get("reason"):
        click.echo(f"  reason: {final['reason']}")
    agreement = final.get("agreement") or {}
    if final["state"] == "FINALIZED" and agreement:
        click.echo(f"  agreement {agreement['@id']} for {agreement['target']}")
        click.echo(f"  between {agreement['assigner']} (provider) and {agreement['assignee']} (consumer)")
    if final["state"] != "FINALIZED":
        sys.exit(1)


AGREEMENT_STATES = ("AGREED", "VERIFIED", "FINALIZED", "REVOKED")


@main.command()
@click.option("--state", "states", multiple=True, type=click.Choice(AGREEMENT_STATES, case_sensitive=False),
              help="Only agreements in this state (repeat for several). Default: every agreement.")
@click.option("--json", "as_json", is_flag=True)
@node_options
def agreements(states: tuple[str, ...], as_json: bool, data_dir: Path | None, node_url: str | None,
               token: str | None) -> None:
    """List this participant's agreements with their state: FINALIZED ones are in force; REVOKED ones show the
    provider's reason and when; any whose data was deleted here says when and why."""
    wanted = sorted({s.upper() for s in states})
    rows = _call(data_dir, node_url, token, lambda c: c.agreements(wanted or None))
    if as_json:
        _print_json(rows)
        return
    if not rows:
        click.echo(f"no agreements in state {' or '.join(wanted)}" if wanted else "no agreements yet")
    for row in rows:
        signed = sum(1 for k in ("providerProof", "consumerProof") if row.get(k))
        label = "dual-signed" if signed == 2 else f"{signed} signature(s)"
        click.echo(f"{row['id']}  {row['role']:8}  {row['assetId']}  {row['state']}  {label}  "
                   f"provider {row['providerDid']}  consumer {row['consumerDid']}")
        if row["state"] == "REVOKED":
            click.echo(f"  {_revoked_line(row.get('revocation'))}")
        if row.get("dataDeleted"):
            click.echo(f"  {_deleted_line(row['dataDeleted'])}")


#: What a revocation's status adds (provider: the consumer's answer; consumer: whether the data is gone yet).
REVOCATION_STATUS = {
    "pending": "; the consumer's node has not yet confirmed (retried until it does)",
    "acknowledged": "; the consumer's node confirmed, with a signed deletion receipt",
    "acknowledged-without-valid-receipt": "; the consumer's node answered without a valid deletion receipt",
    "received": "; use blocked, its data being deleted",
}


def _revoked_line(revocation: dict[str, Any] | None) -> str:
    if not revocation:
        return "revoked by the provider (no reason recorded)"
    return (f"revoked by the provider at {revocation['revokedAt']}: {revocation['reason'] or 'no reason given'}"
            + REVOCATION_STATUS.get(revocation.get("status", ""), ""))


def _deleted_line(deleted: dict[str, Any]) -> str:
    return f"data deleted here at {deleted['at']} ({deleted['reason']})"


@main.group()
def agreement() -> None:
    """One agreement: export its evidence, or check who signed it."""


@agreement.command("export")
@click.argument("agreement_id", metavar="ID")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="File to write (default: stdout).")
@node_options
def agreement_export(agreement_id: str, output: Path | None, data_dir: Path | None, node_url: str | None,
                     token: str | None) -> None:
    """Write the agreement with both proofs and the parties' DID documents (JSON)."""
    evidence = _call(data_dir, node_url, token, lambda c: c.agreement_evidence(agreement_id))
    text = json.dumps(evidence, indent=2, ensure_ascii=False)
    if output is None:
        click.echo(text)
    else:
        output.write_text(text + "\n")
        click.echo(f"evidence of {agreement_id} written to {output}")


@agreement.command("revoke")
@click.argument("agreement_id", metavar="ID")
@click.option("--reason", required=True)
@json_option
@node_options
def agreement_revoke(agreement_id: str, reason: str, as_json: bool, data_dir: Path | None, node_url: str | None,
                     token: str | None) -> None:
    """Revoke an agreement (provider): the consumer's node blocks use and deletes the data."""
    result = _call(data_dir, node_url, token, lambda c: c.revoke(agreement_id, reason))
    _done(result, f"agreement {result['agreementId']}: {result['state']} ({reason}); the consumer is being told",
          as_json)


@agreement.command("verify")
@click.argument("agreement_id", metavar="ID", required=False)
@click.option("--file", "file_path", type=click.Path(exists=True, path_type=Path),
              help="An evidence file (from `tds agreement export`); checked without any network.")
@json_option
@node_options
def agreement_verify(agreement_id: str | None, file_path: Path | None, as_json: bool, data_dir: Path | None,
                     node_url: str | None, token: str | None) -> None:
    """Check an agreement's proofs offline and print who signed what. Exits 1 if a proof is invalid."""
    from connector.protocol import agreements as evidence_check

    if file_path is not None:
        try:
            evidence = jsonbound.loads(file_path.read_text())
        except ValueError as exc:
            _fail(f"{file_path} is not JSON: {exc}")
            return
    elif agreement_id:
        evidence = _call(data_dir, node_url, token, lambda c: c.agreement_evidence(agreement_id))
    else:
        _fail("give an agreement ID or --file EVIDENCE.json")
        return
    try:
        results = evidence_check.check_bundle(evidence)
    except evidence_check.AgreementProofError as exc:
        _fail(str(exc))
        return
    agreement_ = evidence["agreement"]
    valid = sum(r.status == "valid" for r in results)
    if as_json:
        _print_json({"agreementId": agreement_.get("@id"), "target": agreement_.get("target"),
                     "timestamp": agreement_.get("timestamp"),
                     "parties": [{"role": r.role, "did": r.did, "status": r.status, "detail": r.detail}
                                 for r in results],
                     "dualSigned": valid == 2, "valid": not any(r.status == "invalid" for r in results)})
        if any(r.status == "invalid" for r in results):
            sys.exit(1)
        return
    click.echo(f"agreement {agreement_.get('@id')} for {agreement_.get('target')}, timestamp "
               f"{agreement_.get('timestamp')}")
    for r in results:
        mark = {"valid": "signed", "invalid": "INVALID", "missing": "not signed"}[r.status]
        click.echo(f"  {r.role:8} {r.did}: {mark}" + (f" ({r.detail})" if r.detail else ""))
    click.echo("  dual-signed" if valid == 2 else f"  {valid} of 2 parties signed")
    if any(r.status == "invalid" for r in results):
        sys.exit(1)


@main.command("use")
@click.argument("agreement_id", metavar="AGREEMENT")
@click.option("--use-id", help="Your id for this use (required unless --check): a retry with the same id is not "
                               "counted again.")
@click.option("--action", default="use", show_default=True)
@click.option("--purpose", default="")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Write the data here. Without -o the use is counted and logged all the same, but no data is "
                   "written (for data your application holds by other means).")
@click.option("--check", is_flag=True,
              help="Only ask: what a use would be decided now. Nothing is counted, logged or written; no --use-id, "
                   "no -o.")
@json_option
@node_options
def use_command(agreement_id: str, use_id: str | None, action: str, purpose: str, output: Path | None, check: bool,
                as_json: bool, data_dir: Path | None, node_url: str | None, token: str | None) -> None:
    """Use received data through the usage API: decided by the agreement's policy, counted and logged before
    any byte is released.

    \b
      tds use AGREEMENT --use-id ID --purpose P -o FILE   a counted use; the data is written to FILE
      tds use AGREEMENT --use-id ID --purpose P           a counted use without delivery (the API's
                                                          "deliver": false): it takes one of the allowed uses
      tds use AGREEMENT --check --purpose P               a check that does not count (the API's
                                                          "dryRun": true): the decision a use would get now

    Exits 0 on a permit, 1 on a deny or a refusal (revoked, not in force, no data to write, the log does not
    verify), 2 on a usage error, 3 if the node cannot be reached. With --json, a permit or a deny is printed as
    one JSON document: decision, reasons, the log entry, uses left and the bytes written."""
    if check:
        if use_id is not None or output is not None:
            _fail("--check only asks and counts nothing: leave out --use-id and -o")
        result = _call(data_dir, node_url, token, lambda c: c.check_use(agreement_id, action=action,
                                                                         purpose=purpose))
        if as_json:
            _print_json(_use_json(agreement_id, None, result, result.get("allowance")))
        else:
            _print_check(result)
        if result.get("decision") != "permit":
            sys.exit(EXIT_REFUSED)
        return
    if use_id is None:
        _fail("give --use-id ID (your id for this use), or --check to ask without using")
        return
    if output is None:
        result = _call(data_dir, node_url, token, lambda c: c.use(agreement_id, use_id, action=action,
                                                                   purpose=purpose))
        if as_json:
            _print_json(_use_json(agreement_id, use_id, result, _allowance_now(data_dir, node_url, token,
                                                                                 agreement_id)))
            if result.get("decision") != "permit":
                sys.exit(EXIT_REFUSED)
            return
        _print_decision(result)
        if result.get("decision") != "permit":
            sys.exit(EXIT_REFUSED)
        click.echo("  counted without delivery: no data written (give -o FILE to receive it)")
        return

    import aiohttp

    from connector.client import ClientError

    tmp = output.with_name(output.name + ".part")
    try:
        fh = tmp.open("wb")  # before the use is asked for: an unwritable path costs no use
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror or exc} (nothing was used)")
        return

    released: dict[str, str] = {}  # the permit's X-TDS-… headers: its log entry

    async def fetch(client: Any) -> int | dict[str, Any]:
        size = 0
        try:
            with fh:
                async for chunk in client.use_data(agreement_id, use_id, action=action, purpose=purpose,
                                                   decision=released):
                    fh.write(chunk)
                    size += len(chunk)
        except ClientError as exc:
            tmp.unlink(missing_ok=True)
            if exc.status == 403 and isinstance(exc.body, dict):
                return exc.body  # a deny: a decision with its reasons, not an error
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # Cut off (the node found damaged data mid-stream, or the connection broke) or the disk failed:
            # nothing half-released is left behind.
            tmp.unlink(missing_ok=True)
            _fail(f"the data was not written to {output}: {type(exc).__name__}: {exc} (after {size} bytes; "
                  "the use may have been counted: see tds usage show)", EXIT_REFUSED)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(output)
        return size

    try:
        result = _call(data_dir, node_url, token, fetch)
    finally:
        fh.close()
        tmp.unlink(missing_ok=True)  # gone already once the data is in place
    if as_json:
        allowance = _allowance_now(data_dir, node_url, token, agreement_id)
        if isinstance(result, dict):
            _print_json(_use_json(agreement_id, use_id, result, allowance))
            sys.exit(EXIT_REFUSED)
        seq = released.get("x-tds-log-seq", "")
        answer = {"decision": released.get("x-tds-decision", "permit"), "seq": int(seq) if seq.isdigit() else None,
                  "entryHash": released.get("x-tds-log-hash")}
        _print_json(_use_json(agreement_id, use_id, answer, allowance, output=output, size=result))
        return
    if isinstance(result, dict):
        _print_decision(result)
        sys.exit(EXIT_REFUSED)
    click.echo(f"permit: {result} bytes written to {output}")


def _allowance_now(data_dir: Path | None, node_url: str | None, token: str | None,
                   agreement_id: str) -> dict[str, Any] | None:
    """What is left of the agreement's allowance now (None if the node does not say: the use is done all the
    same)."""
    from connector.client import ClientError

    async def read(client: Any) -> dict[str, Any] | None:
        try:
            return (await client.usage(agreement_id)).get("allowance")  # type: ignore[no-any-return]
        except ClientError:
            return None

    return _call(data_dir, node_url, token, read)


def _use_json(agreement_id: str, use_id: str | None, answer: dict[str, Any], allowance: dict[str, Any] | None, *,
              output: Path | None = None, size: int | None = None) -> dict[str, Any]:
    """``tds use --json``: the decision with its reasons, the use's log entry (none for a check), what is left
    of the allowance and what was written."""
    allowance = allowance or {}
    return {"agreementId": agreement_id, "useId": use_id, "check": bool(answer.get("dryRun")),
            "decision": answer.get("decision"), "reasons": answer.get("reasons", []),
            "seq": answer.get("seq") or None, "entryHash": answer.get("entryHash") or None,
            "repeated": answer.get("repeated"), "effects": answer.get("effects", []),
            "usesLeft": allowance.get("usesLeft"), "allowance": allowance, "dataHeld": answer.get("dataHeld"),
            "output": str(output) if output is not None else None, "bytesWritten": size}


def _print_decision(result: dict[str, Any]) -> None:
    click.echo(f"{result.get('decision')}: use #{result.get('seq')} logged" +
               (" (a retry: not counted again)" if result.get("repeated") else ""))
    for reason in result.get("reasons", []):
        click.echo(f"  {reason}")


def _print_check(result: dict[str, Any]) -> None:
    """A dry run's answer: the decision a use would get now, and what would be left."""
    verdict = "would be permitted" if result.get("decision") == "permit" else "would be denied"
    click.echo(f"{result.get('decision')}: a use now {verdict} (a check: nothing counted or logged)")
    for reason in result.get("reasons", []):
        click.echo(f"  {reason}")
    allowance = result.get("allowance") or {}
    if "usesLeft" in allowance:
        click.echo(f"  {allowance['usesLeft']} of {allowance['usesAllowed']} uses left now")
    if "secondsLeft" in allowance:
        click.echo(f"  {allowance['secondsLeft'] // 86400} days left (until {allowance['useUntil']})")
    if result.get("decision") == "permit" and result.get("dataHeld") is False:
        click.echo("  no data held here: a use with -o would be refused until the data is transferred")


@main.command("query")
@click.argument("agreement_id", metavar="AGREEMENT")
@click.argument("sql", required=False, default="")
@click.option("--template", "template_id", help="Run one of the agreement's query templates instead of SQL.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A template's parameter (repeatable); the provider reads it as the type the template declares.")
@json_option
@node_options
def query_command(agreement_id: str, sql: str, template_id: str | None, params: tuple[str, ...], as_json: bool,
                  data_dir: Path | None, node_url: str | None, token: str | None) -> None:
    """Ask the provider of AGREEMENT an aggregate query of its data sandbox: the query runs next to the data,
    which never leaves the provider, and only aggregates come back, signed by the provider (checked here).

    \b
      tds query AGREEMENT "SELECT region, avg(defect_rate) FROM data GROUP BY region"
      tds query AGREEMENT --template by-plant --param plant=7

    Prints the result as a table, how many groups were suppressed (fewer records than the agreement's minimum
    group size; under a privacy budget a group leaves on its noisy count, and the number left out is not told)
    and the privacy budget the query spent. Exits 0 with a result, 1 when the provider refuses the
    query (the rule is named: the agreement's terms, its policy, the privacy budget, a revocation) or its result
    does not verify, 2 on a usage error (a wrong option, no such agreement), 3 if the node cannot be reached."""
    from connector.client import ClientError

    parameters: dict[str, str] = {}
    for item in params:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            _fail(f"--param {item!r}: give NAME=VALUE")
        parameters[name.strip()] = value
    if not sql.strip() and template_id is None:
        _fail("give the SQL, or --template ID")
    if sql.strip() and template_id is not None:
        _fail("give the SQL or --template ID, not both")

    async def go(client: Any) -> dict[str, Any]:
        try:
            return await client.query(agreement_id, sql, template_id=template_id,  # type: ignore[no-any-return]
                                      parameters=parameters or None)
        except ClientError as exc:
            rule = exc.body.get("rule") if isinstance(exc.body, dict) else None
            if rule is None:
                raise
            return {"refused": exc.message, "rule": rule}

    answer = _call(data_dir, node_url, token, go)
    if "refused" in answer:
        named = f" (rule {answer['rule']})" if answer.get("rule") else ""
        _fail(f"{answer['refused']}{named}", EXIT_REFUSED)
    if as_json:
        _print_json(answer)
        return
    result = answer["result"]
    _print_rows(result["columns"], result["rows"])
    suppressed = result.get("suppressedGroups")
    left_out = (f"{suppressed} suppressed (too few records)" if isinstance(suppressed, int)
                else "groups whose noisy count is under the minimum left out, uncounted")
    budget = answer.get("budget") or {}
    spent = f"epsilon spent {result.get('epsilonSpent'):g}" if result.get("noise") else "no noise (a query template)"
    if result.get("noise") and result.get("thresholdEpsilon"):
        spent += f", {result['thresholdEpsilon']:g} of it on a count of each group's rows"
    if budget.get("epsilonTotal") is not None and budget.get("epsilonUsed") is not None:
        spent += f" ({budget['epsilonUsed']:g} of {budget['epsilonTotal']:g} used)"
    click.echo(f"{len(result['rows'])} group(s); {left_out}; {spent}")
    click.echo(f"signed by {answer['document']['provider']}: verified; query {answer['queryId']}")


def _print_rows(columns: list[str], rows: list[list[Any]]) -> None:
    """A result as a plain table (numbers with six significant digits)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.6g}"
        return "" if value is None else str(value)

    shown = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in shown)]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in shown:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


@main.group()
def usage() -> None:
    """Uses of received data."""


@usage.command("show")
@click.argument("agreement_id", metavar="AGREEMENT")
@click.option("--json", "as_json", is_flag=True)
@node_options
def usage_show(agreement_id: str, as_json: bool, data_dir: Path | None, node_url: str | None,
               token: str | None) -> None:
    """Uses so far, what is left of the allowance, and the latest decisions with their reasons."""
    summary = _call(data_dir, node_url, token, lambda c: c.usage(agreement_id))
    if as_json:
        _print_json(summary)
        return
    allowance = summary["allowance"]
    click.echo(f"agreement {agreement_id} ({summary['target']}): {summary['uses']} use(s)"
               + (f", first {summary['firstUse']}" if summary.get("firstUse") else ""))
    state = summary.get("state", "FINALIZED")
    if state == "REVOKED":
        click.echo(f"  {_revoked_line(summary.get('revocation'))}: no uses left")
    elif state != "FINALIZED":
        click.echo(f"  {state}: not in force, no uses left")
    if summary.get("dataDeleted"):
        click.echo(f"  {_deleted_line(summary['dataDeleted'])}")
    if "usesLeft" in allowance:
        click.echo(f"  {allowance['usesLeft']} of {allowance['usesAllowed']} uses left")
    if "secondsLeft" in allowance:
        click.echo(f"  {allowance['secondsLeft'] // 86400} days left (until {allowance['useUntil']})")
    elif "usePeriod" in allowance:
        click.echo(f"  {allowance['usePeriod']} from the first use")
    for entry in summary["latest"]:
        reasons = "; ".join(entry.get("reasons", []))
        click.echo(f"  #{entry['seq']} {entry['at']} {entry.get('decision') or entry['kind']} "
                   f"{entry.get('action', '')} {entry.get('purpose', '')} [{entry.get('application', '')}]"
                   + (f": {reasons}" if reasons else ""))


@usage.command("report")
@click.argument("agreement_id", metavar="AGREEMENT")
@click.option("--json", "as_json", is_flag=True)
@node_options
def usage_report(agreement_id: str, as_json: bool, data_dir: Path | None, node_url: str | None,
                 token: str | None) -> None:
    """The provider's view: the consumer's signed receipts, uses per day and purpose, anomalies."""
    report = _call(data_dir, node_url, token, lambda c: c.usage_report(agreement_id))
    if as_json:
        _print_json(report)
        return
    click.echo(f"agreement {agreement_id} ({report['target']}) used by {report['consumer']}")
    click.echo(f"  {report['receivedEntries']} signed log entries received ({report['signedHeads']} signed heads), "
               f"last {report['lastReceiptAt'] or 'never'}" + ("  OVERDUE" if report["overdue"] else ""))
    click.echo(f"  {report['uses']} use(s), {report['denied']} denied")
    allowance = report["allowance"]
    if "usesLeft" in allowance:
        click.echo(f"  {allowance['usesLeft']} of {allowance['usesAllowed']} uses left")
    for day, purposes in report["usesPerDay"].items():
        click.echo(f"  {day}: " + ", ".join(f"{n} for {p}" for p, n in purposes.items()))
    for duty in report["duties"]:
        click.echo(f"  #{duty['seq']} {duty['at']} {duty['kind']}: {duty['detail']}")
    for anomaly in report["anomalies"]:
        click.echo(f"  ANOMALY {anomaly['at']} {anomaly['kind']}: {anomaly['detail']}")
    if report.get("revocation"):
        r = report["revocation"]
        click.echo(f"  revoked {r['revokedAt']} ({r['reason']}): {r['status']}")


@main.group("log")
def log_group() -> None:
    """The signed usage log."""


@log_group.command("verify")
@click.argument("agreement_id", metavar="AGREEMENT")
@json_option
@node_options
def log_verify(agreement_id: str, as_json: bool, data_dir: Path | None, node_url: str | None,
               token: str | None) -> None:
    """Check the agreement's usage log: the hash chain with its use counts, every signed head, and that it
    holds what the provider acknowledged (a log cut short is named). Names the first bad entry; exits 1 then.
    On the provider's node the log is its own record of the sandbox queries it ran (acknowledged by no one)."""
    from connector.services.usage import check_log
    from usage_policies import ledger

    data = _call(data_dir, node_url, token, lambda c: c.usage_log(agreement_id))
    ack = data.get("acknowledgement")
    problem = check_log(data["entries"], data["heads"], data["didDocument"], ack, data.get("providerDidDocument"))
    n = len(data["entries"])
    if as_json:
        summary: dict[str, Any] = {
            "agreementId": agreement_id, "intact": problem is None, "entries": n, "signedHeads": len(data["heads"]),
            "head": data["entries"][-1]["hash"] if n else None, "acknowledgedSeq": ack["seq"] if ack else None,
            "role": data.get("role"),
            "permittedUses": None,
            "broken": None if problem is None else {"seq": problem.seq, "index": problem.index,
                                                    "problem": problem.problem}}
        if problem is None:
            import msgspec

            summary["permittedUses"] = ledger.running_counts(
                [msgspec.convert(e, ledger.Entry) for e in data["entries"]])[0]
        _print_json(summary)
        if problem is not None:
            sys.exit(1)
        return
    if problem is not None:
        click.echo(f"usage log of {agreement_id}: BROKEN at entry #{problem.seq} (position {problem.index}): "
                   f"{problem.problem}")
        sys.exit(1)
    last = data["entries"][-1]["hash"] if n else "-"
    import msgspec

    uses, _ = ledger.running_counts([msgspec.convert(e, ledger.Entry) for e in data["entries"]])
    click.echo(f"usage log of {agreement_id}: {n} entries, {uses} permitted use(s), chain intact, "
               f"{len(data['heads'])} signed head(s); {_acknowledgement_note(data.get('role'), ack)}; head {last}")


def _acknowledgement_note(role: str | None, ack: dict[str, Any] | None) -> str:
    """What ``tds log verify`` says of the provider's acknowledgement. The consumer's chain of its uses is
    acknowledged by the provider as receipts come in; on the provider's node the chain is the provider's own
    record of the sandbox queries it ran for the consumer, which no one acknowledges."""
    if role == "provider":
        return "the provider's own record of the queries it ran (no acknowledgement is due)"
    return f"the provider acknowledged up to #{ack['seq']}" if ack else "not yet acknowledged by the provider"


#: The longest reason a dispute gives (as the management API takes it).
MAX_DISPUTE_REASON = 1000
#: What a statement's quantity of each basis is counted in.
_BASIS_UNITS = {"use": ("use", "uses"), "query": ("query", "queries"), "gigabyte": ("GB", "GB"),
                "period": ("period", "periods")}


def _period_option(period: str | None) -> str | None:
    """``--period`` checked offline: a label such as 2026-11, 2026-W48 or 2026-11-30."""
    from usage_policies.pricing import PricingError, parse_period_label

    if period is not None:
        try:
            parse_period_label(period)
        except PricingError as exc:
            _fail(f"--period: {exc}")
    return period


def _until_option(until: str | None) -> str | None:
    """``--until``: ``now`` or an ISO 8601 date-time with its time zone (checked before the node is asked)."""
    from datetime import datetime

    if until is None or until == "now":
        return until
    try:
        moment = datetime.fromisoformat(until.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        _fail(f"--until must be 'now' or an ISO 8601 date-time with its time zone (2026-11-30T00:00:00Z), "
              f"not {until!r}")
    return until


def quantities_text(quantities: dict[str, Any]) -> str:
    """``12 uses, 3 queries, 1.5 GB``: a statement's quantities in words."""
    parts = []
    for basis, quantity in quantities.items():
        one, many = _BASIS_UNITS.get(basis, (basis, basis))
        parts.append(f"{quantity} {one if str(quantity) == '1' else many}")
    return ", ".join(parts) or "nothing metered"


def amounts_text(amounts: dict[str, Any] | None) -> str:
    """``27.00 CNY, 5.00 EUR`` (``0`` for none)."""
    return ", ".join(f"{amount} {currency}" for currency, amount in sorted((amounts or {}).items())) or "0"


def statement_line(row: dict[str, Any]) -> str:
    """One statement in a line: id, period, role, state, total, quantities and agreement."""
    period = (row.get("period") or {}).get("label", "")
    return (f"{row['id']}  {period}  {row.get('role', ''):8}  {row.get('state', ''):9}  "
            f"{row.get('total')} {row.get('currency', '')}  ({quantities_text(row.get('quantities') or {})})  "
            f"agreement {row.get('agreement')}")


def statement_lines(found: dict[str, Any]) -> list[str]:
    """One statement in full (``tds statement show``): parties, period, receipts, lines, total, share, answer."""
    document = found.get("document") or {}
    period = found.get("period") or {}
    rows: list[tuple[str, str]] = [
        ("agreement", str(found.get("agreement"))),
        ("counterparty", str(found.get("counterparty"))),
        ("period", f"{period.get('label')} ({period.get('start')} to {period.get('end')})"),
        ("state", str(found.get("state"))),
        ("issued", str(found.get("issued"))),
    ]
    receipts = document.get("receipts")
    if isinstance(receipts, dict):
        rows.append(("receipts", f"{receipts.get('first')} to {receipts.get('last')} ({receipts.get('uses')} "
                                 f"permitted uses; last entry {str(receipts.get('head'))[:24]}…)"))
    elif document:
        rows.append(("receipts", "none in the period"))
    if document.get("previous"):
        rows.append(("previous", str(document["previous"])))
    if document.get("supersedes"):
        rows.append(("replaces", f"{document['supersedes']} (disputed)"))
    for line in found.get("lines") or []:
        one, many = _BASIS_UNITS.get(str(line.get("basis")), (line.get("basis"), line.get("basis")))
        tiers = f" (tiers {', '.join(line['tiers'])})" if line.get("tiers") else ""
        rows.append(("line", f"{line.get('quantity')} {one if line.get('quantity') == '1' else many} at "
                             f"{line.get('unitPrice')} {line.get('currency')}{tiers} = {line.get('amount')} "
                             f"{line.get('currency')}"))
    rows.append(("total", f"{found.get('total')} {found.get('currency', '')}"))
    share = found.get("share")
    if isinstance(share, dict):
        currency = found.get("currency", "")
        rows.append(("platform share", f"{share.get('percent')}% to {share.get('platform')}: "
                                       f"{share.get('platformAmount')} {currency}; the provider's "
                                       f"{share.get('providerAmount')} {currency}"))
    answer = found.get("answer")
    if isinstance(answer, dict) and "problems" in answer:
        rows.append(("answer", f"disputed {answer.get('disputed', '')}; the consumer's own total "
                               f"{answer.get('consumerTotal')}"))
        for problem in answer.get("problems") or []:
            contested = f" (contests {', '.join(map(str, problem['contested'][:10]))}" \
                        f"{' …' if len(problem['contested']) > 10 else ''})" if problem.get("contested") else ""
            rows.append(("problem", f"{problem.get('rule')}: {problem.get('detail')}{contested}"))
    elif isinstance(answer, dict):
        rows.append(("answer", f"accepted {answer.get('accepted', '')}"))
    if found.get("reason") and not (isinstance(answer, dict) and "problems" in answer):  # else: the problems
        rows.append(("reason", str(found["reason"])))
    width = max(len(key) for key, _ in rows)
    return [f"statement {found.get('id')} ({found.get('role')})",
            *(f"  {key.ljust(width)}  {value}" for key, value in rows)]


@main.command()
@click.option("--agreement", "agreement_id", metavar="ID", help="Only this agreement's statements.")
@click.option("--period", metavar="LABEL", help="Only this billing period: 2026-11 (month), 2026-W48 (week) or "
                                                "2026-11-30 (day).")
@click.option("--role", type=click.Choice(["provider", "consumer"]), help="Only those issued (provider) or "
                                                                          "received (consumer).")
@click.option("--host-report", is_flag=True,
              help="Instead: what each hosted participant earned and owes by its accepted statements, and the "
                   "platform's share (needs the node's admin token: DIR/admin.token or --token).")
@json_option
@node_options
def statements(agreement_id: str | None, period: str | None, role: str | None, host_report: bool, as_json: bool,
               data_dir: Path | None, node_url: str | None, token: str | None) -> None:
    """Settlement statements of this participant's post-paid prices, newest first: id, period, role, state,
    total, quantities and agreement."""
    period = _period_option(period)
    if host_report:
        if agreement_id or role:
            _fail("--host-report sums every hosted participant's statements: leave out --agreement and --role")
        report = _call(data_dir, node_url, token, lambda c: c.statements_report(period), admin=True)
        if as_json:
            _print_json(report)
            return
        click.echo(f"statements of {period or 'every period'}")
        for row in report.get("participants") or []:
            click.echo(f"  {row['name']}  earned {amounts_text(row.get('earned'))}  platform share "
                       f"{amounts_text(row.get('platformShare'))}  owes {amounts_text(row.get('owes'))}  "
                       f"({row.get('statements', 0)} statement{'' if row.get('statements') == 1 else 's'})")
        click.echo(f"  platform total {amounts_text(report.get('platform'))}")
        return
    rows = _call(data_dir, node_url, token, lambda c: c.statements(agreement=agreement_id, period=period, role=role))
    if as_json:
        _print_json(rows)
        return
    if not rows:
        click.echo("no statements yet (a provider issues them: tds statement issue --agreement ID)")
    for row in rows:
        click.echo(statement_line(row))


@main.group()
def statement() -> None:
    """One settlement statement: issue it (provider), show, accept or dispute it (consumer), export and verify it."""


@statement.command("issue")
@click.option("--agreement", "agreement_id", metavar="ID", required=True)
@click.option("--until", metavar="now|ISO",
              help="Close the stretch early: now, or an ISO 8601 time (default: the end of the current billing "
                   "period, which must have passed).")
@json_option
@node_options
def statement_issue(agreement_id: str, until: str | None, as_json: bool, data_dir: Path | None,
                    node_url: str | None, token: str | None) -> None:
    """Issue the next statement of an agreement this participant provides, signed, and send it to the consumer.
    Exits 1 if the stretch is already settled or its statement awaits an answer."""
    from connector.client import ClientError

    until = _until_option(until)

    async def issue(client: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = await client.issue_statement(agreement_id, until=until)
        except ClientError as exc:
            if exc.path != "$.until":
                raise
            # The API's field is this command's --until option: say so in its words.
            hint = 'give until ("now" or a time)'
            message = (exc.message.replace(hint, "give --until now (or a time)") if hint in exc.message
                       else f"{exc.message} (--until)")
            raise ClientError(exc.status, message, body=exc.body) from None
        return result

    found = _call(data_dir, node_url, token, issue)
    period = found.get("period") or {}
    _done(found, f"statement {found['id']} for agreement {found['agreement']}, {period.get('label')} "
                 f"({period.get('start')} to {period.get('end')}): {found.get('total')} {found.get('currency', '')} "
                 f"for {quantities_text(found.get('quantities') or {})}; {found.get('state')}", as_json)


@statement.command("show")
@click.argument("statement_id", metavar="ID")
@json_option
@node_options
def statement_show(statement_id: str, as_json: bool, data_dir: Path | None, node_url: str | None,
                   token: str | None) -> None:
    """Show a statement: period, receipts, lines, total, platform share, and the consumer's answer."""
    found = _call(data_dir, node_url, token, lambda c: c.statement(statement_id))
    if as_json:
        _print_json(found)
        return
    for line in statement_lines(found):
        click.echo(line)


@statement.command("accept")
@click.argument("statement_id", metavar="ID")
@json_option
@node_options
def statement_accept(statement_id: str, as_json: bool, data_dir: Path | None, node_url: str | None,
                     token: str | None) -> None:
    """Accept (countersign) a statement this participant received. Exits 1 if it is no longer open."""
    found = _call(data_dir, node_url, token, lambda c: c.accept_statement(statement_id))
    _done(found, f"statement {found['id']}: {found['state']} ({found.get('total')} {found.get('currency', '')})",
          as_json)


@statement.command("dispute")
@click.argument("statement_id", metavar="ID")
@click.option("--reason", required=True, help=f"Why (at most {MAX_DISPUTE_REASON} characters; the provider sees it).")
@json_option
@node_options
def statement_dispute(statement_id: str, reason: str, as_json: bool, data_dir: Path | None, node_url: str | None,
                      token: str | None) -> None:
    """Dispute a statement this participant received, saying why. Exits 1 if it is no longer open."""
    if not reason.strip() or len(reason) > MAX_DISPUTE_REASON:
        _fail(f"--reason must hold 1 to {MAX_DISPUTE_REASON} characters")
    found = _call(data_dir, node_url, token, lambda c: c.dispute_statement(statement_id, reason))
    _done(found, f"statement {found['id']}: {found['state']} ({reason})", as_json)


@statement.command("export")
@click.argument("statement_id", metavar="ID")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json", show_default=True,
              help="json: the signed statement, its signed answer and both parties' DID documents (what "
                   "`tds statement verify` checks); csv: its lines, for accounting.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="File to write (default: stdout).")
@node_options
def statement_export(statement_id: str, fmt: str, output: Path | None, data_dir: Path | None,
                     node_url: str | None, token: str | None) -> None:
    """Write a statement as signed JSON (default) or as CSV."""
    if fmt == "csv":
        text = _call(data_dir, node_url, token, lambda c: c.export_statement_csv(statement_id)).rstrip("\n")
    else:
        text = json.dumps(_call(data_dir, node_url, token, lambda c: c.export_statement(statement_id)), indent=2,
                          ensure_ascii=False)
    if output is None:
        click.echo(text)
        return
    try:
        output.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror}", EXIT_REFUSED)
    click.echo(f"statement {statement_id} written to {output} ({fmt})")


@statement.command("verify")
@click.argument("file_path", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
def statement_verify(file_path: Path, as_json: bool) -> None:
    """Check an exported statement offline (no node, no network): the provider's signature, the consumer's
    answer bound to this exact statement, and the arithmetic of its lines. Exits 1 naming what is wrong."""
    from connector.protocol import statements as statements_core

    try:
        document = jsonbound.loads(file_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        _fail(f"{file_path} is not a JSON file: {exc}")
        return
    if not isinstance(document, dict):
        _fail(f"{file_path}: not a usage statement or an exported statement", EXIT_REFUSED)
        return
    try:
        verified = statements_core.verify_bundle(document)
    except statements_core.StatementError as exc:
        _fail(f"{file_path}: {exc}", EXIT_REFUSED)
        return
    inner = document.get("statement") if isinstance(document.get("statement"), dict) else document
    currency = str(inner.get("currency", ""))
    if as_json:
        _print_json({"statement": verified.statement, "agreement": verified.agreement, "total": verified.total,
                     "currency": currency, "answer": verified.answer, "problems": list(verified.notes),
                     "verified": True})
        return
    click.echo(f"statement {verified.statement}")
    click.echo(f"  agreement  {verified.agreement}")
    click.echo(f"  total      {verified.total} {currency}")
    answer = {"accepted": "accepted by the consumer", "disputed": "disputed by the consumer",
              "none": "not answered yet"}[verified.answer]
    click.echo(f"  answer     {answer}")
    for note in verified.notes:
        click.echo(f"    {note}")
    click.echo("  signatures verified")


@main.group()
def negotiation() -> None:
    """Negotiations: show one with its history, or terminate it."""


@negotiation.command("show")
@click.argument("negotiation_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True)
@node_options
def negotiation_show(negotiation_id: str, as_json: bool, data_dir: Path | None, node_url: str | None,
                     token: str | None) -> None:
    """Show a negotiation's state, reason and history."""
    record = _call(data_dir, node_url, token, lambda c: c.negotiation(negotiation_id))
    if as_json:
        _print_json(record)
        return
    click.echo(f"negotiation {record['id']} ({record['role']}) with {record['counterpartyDid']}: {record['state']}")
    if record.get("reason"):
        click.echo(f"  reason: {record['reason']}")
    for event in record.get("history", []):
        click.echo(f"  {event['at']}  {event['kind']:12}  {event['detail']}")


@negotiation.command("terminate")
@click.argument("negotiation_id", metavar="ID")
@click.option("--reason", required=True)
@json_option
@node_options
def negotiation_terminate(negotiation_id: str, reason: str, as_json: bool, data_dir: Path | None,
                          node_url: str | None, token: str | None) -> None:
    """Terminate a negotiation, telling the peer why."""
    record = _call(data_dir, node_url, token, lambda c: c.terminate_negotiation(negotiation_id, reason))
    _done(record, f"negotiation {record['id']}: {record['state']}", as_json)


def manifest_lines(bundle: dict[str, Any]) -> list[str]:
    """The verified manifest of a bundle, as a few readable lines (raises ManifestError if it does not verify)."""
    from connector.payload import manifest as manifests

    manifest, envelope, binding = manifests.read_bundle(bundle)
    return [
        f"manifest {manifests.digest(manifest)}",
        f"  {manifest.size} bytes of {manifest.content_type}, {len(manifest.chunks)} chunk(s) of "
        f"{manifest.chunk_size} bytes, {manifest.algorithm}, root {manifest.root}",
        f"  signed by the provider {binding.provider} ({envelope['proof']['cryptosuite']}, "
        f"{envelope['proof']['created']})",
        f"  for agreement {binding.agreement_id}, consumer {binding.consumer}",
        f"  transfer {binding.provider_pid} (provider) / {binding.consumer_pid} (consumer)",
    ]


def manifest_json(bundle: dict[str, Any]) -> dict[str, Any]:
    """What :func:`manifest_lines` says, as JSON (raises ManifestError if the bundle does not verify)."""
    from connector.payload import manifest as manifests

    manifest, envelope, binding = manifests.read_bundle(bundle)
    return {"verified": True, "digest": manifests.digest(manifest), "size": manifest.size,
            "contentType": manifest.content_type, "chunks": len(manifest.chunks), "chunkSize": manifest.chunk_size,
            "algorithm": manifest.algorithm, "root": manifest.root, "provider": binding.provider,
            "cryptosuite": envelope["proof"]["cryptosuite"], "signedAt": envelope["proof"]["created"],
            "agreementId": binding.agreement_id, "consumer": binding.consumer,
            "providerPid": binding.provider_pid, "consumerPid": binding.consumer_pid}


#: ``tds transfer``: a line on stderr after this many seconds without progress, and again each as many more.
QUIET_NOTE_S = 15.0
#: History events of a transfer that ``tds transfer`` tells as they come: a failed attempt and its next step.
TOLD_EVENTS = ("error", "retry", "resume")


@main.command()
@click.argument("peer_ref", metavar="PEER")
@click.argument("agreement_id")
@click.option("--timeout", default=600.0, show_default=True,
              help="Stop waiting once the transfer has shown no progress (no new state, byte or event) for this "
                   "many seconds; it goes on in the node (tds transfers show ID). The node ends a transfer itself "
                   "when no data arrives for its transfer_stall_timeout_s (60 s by default), or when the provider "
                   "does not start it within transfer_start_timeout_s (300 s).")
@click.option("--push", is_flag=True, help="Have the provider send the data to this node (HttpData-PUSH) instead "
              "of this node fetching it.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the outcome as one JSON document on stdout: the transfer's id, state and reason, where the "
                   "data was saved and the verified manifest (the lines about its progress stay on stderr).")
@node_options
def transfer(peer_ref: str, agreement_id: str, timeout: float, push: bool, as_json: bool, data_dir: Path | None,
             node_url: str | None, token: str | None) -> None:
    """Get the data of AGREEMENT_ID from PEER (pulled, or pushed with --push) and print the verified manifest.

    While it runs, stderr shows a progress bar (on a terminal) and a line for each state the transfer
    enters, for each attempt that failed (its reason and what the node does next: a dropped stream is
    resumed, data that could not be stored is fetched again after a pause) and for every 15 s without
    progress. Exit 0 once COMPLETED; 1 if it ends TERMINATED (the reason is printed) or --timeout passes
    without progress."""
    import time

    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    async def go(client: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
        record = await client.start_transfer(agreement_id, peer_ref, push=push)
        columns = ("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
        console = Console(stderr=True)
        with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:

            def say(line: str) -> None:  # above the bar; the reasons are text, never markup
                bar.console.print(line, markup=False, highlight=False, soft_wrap=True)

            task = bar.add_task("waiting for the provider", total=None)
            say(f"transfer {record['id']}: {record['state']}")
            state, received, told = record["state"], record.get("received"), 0
            quiet_since = noted = time.monotonic()
            while record["state"] not in ("COMPLETED", "TERMINATED"):
                record = await client.transfer(record["id"], wait_s=0.25)  # returns early once final
                history = record.get("history", [])
                now = time.monotonic()
                if (record["state"], record.get("received")) != (state, received) or len(history) != told:
                    quiet_since = noted = now
                if record["state"] != state and record["state"] not in ("COMPLETED", "TERMINATED"):
                    say(f"transfer {record['id']}: {record['state']}"
                        + (f" ({record['reason']})" if record.get("reason") else ""))
                for event in history[told:]:
                    if event["kind"] in TOLD_EVENTS:
                        say(f"  {event['kind']}: {event['detail']}")
                state, received, told = record["state"], record.get("received"), len(history)
                if record.get("size") is not None:
                    bar.update(task, description="receiving, verified", total=record["size"],
                               completed=record["received"])
                if now - noted >= QUIET_NOTE_S and record["state"] not in ("COMPLETED", "TERMINATED"):
                    noted = now
                    size = f" {record['received']} of {record['size']} bytes," if record.get("size") is not None else ""
                    say(f"  no progress for {now - quiet_since:.0f} s ({record['state']},{size} waiting"
                        f"{' for the provider' if record['state'] == 'REQUESTED' else ''})")
                if now - quiet_since >= timeout:
                    break
        bundle = await client.transfer_bundle(record["id"]) if record["state"] == "COMPLETED" else None
        return record, bundle

    final, bundle = _call(data_dir, node_url, token, go)
    if as_json:
        done = final["state"] == "COMPLETED" and bundle is not None
        _print_json({"transferId": final["id"], "state": final["state"], "reason": final.get("reason", ""),
                     "agreementId": final.get("agreementId", agreement_id),
                     "timedOut": final["state"] not in ("COMPLETED", "TERMINATED"),
                     "savedPath": final.get("vaultPath") if done else None,
                     "manifest": manifest_json(bundle) if done and bundle is not None else None,
                     "transfer": final})
        if not done:
            sys.exit(EXIT_REFUSED)
        return
    click.echo(f"transfer {final['id']}: {final['state']}")
    if final.get("reason"):
        click.echo(f"  reason: {final['reason']}")
    if final["state"] not in ("COMPLETED", "TERMINATED"):
        click.echo(f"  no progress for {timeout:g} s (--timeout); it goes on in the node: "
                   f"tds transfers show {final['id']}")
    if final["state"] != "COMPLETED" or bundle is None:
        sys.exit(EXIT_REFUSED)
    click.echo(f"  saved to {final['vaultPath']} (in the node's data folder)")
    for line in manifest_lines(bundle):
        click.echo(line)


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@node_options
@click.pass_context
def transfers(ctx: click.Context, as_json: bool, data_dir: Path | None, node_url: str | None,
              token: str | None) -> None:
    """Transfer processes: list them (no subcommand), show, suspend, resume or terminate one."""
    if ctx.invoked_subcommand is not None:
        return
    rows = _call(data_dir, node_url, token, lambda c: c.transfers())
    if as_json:
        _print_json(rows)
        return
    if not rows:
        click.echo("no transfers yet")
    for row in rows:
        progress = f"{row['received']}/{row['size']} bytes" if row.get("size") is not None else ""
        mode = {"HttpData-PUSH": "push", "HttpData-PULL": "pull"}.get(row.get("format", ""), row.get("format", ""))
        click.echo(f"{row['id']}  {row['role']:8}  {mode:4}  {row['state']:10}  {row['assetId']}  {progress}")


@transfers.command("show")
@click.argument("transfer_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True)
@node_options
def transfers_show(transfer_id: str, as_json: bool, data_dir: Path | None, node_url: str | None,
                   token: str | None) -> None:
    """Show a transfer's state, progress, reason and history."""
    record = _call(data_dir, node_url, token, lambda c: c.transfer(transfer_id))
    if as_json:
        _print_json(record)
        return
    click.echo(f"transfer {record['id']} ({record['role']}) with {record['counterpartyDid']}: {record['state']}")
    click.echo(f"  agreement {record['agreementId']}, asset {record['assetId']}, "
               f"{record['received']}/{record.get('size')} bytes")
    if record.get("reason"):
        click.echo(f"  reason: {record['reason']}")
    for event in record.get("history", []):
        click.echo(f"  {event['at']}  {event['kind']:12}  {event['detail']}")


def _transfer_action(action: str, summary: str) -> None:
    @transfers.command(action, help=summary)
    @click.argument("transfer_id", metavar="ID")
    @click.option("--reason", default="", help="Told to the peer.")
    @json_option
    @node_options
    def command(transfer_id: str, reason: str, as_json: bool, data_dir: Path | None, node_url: str | None,
                token: str | None) -> None:
        record = _call(data_dir, node_url, token, lambda c: c.transfer_action(transfer_id, action, reason))
        _done(record, f"transfer {record['id']}: {record['state']}", as_json)


_transfer_action("suspend", "Suspend a transfer, telling the peer why.")
_transfer_action("resume", "Resume a suspended transfer.")
_transfer_action("terminate", "Terminate a transfer, telling the peer why.")


@main.group()
def manifest() -> None:
    """Payload manifests: check a received payload offline."""


@manifest.command("verify")
@click.argument("file_path", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dir", "data_dir", type=click.Path(file_okay=False, path_type=Path), envvar="TDS_DIR",
              help="The node's data folder: needed when FILE is a file of its vault (sealed at rest).")
@json_option
def manifest_verify(file_path: Path, bundle_path: Path, data_dir: Path | None, as_json: bool) -> None:
    """Check FILE against BUNDLE (the .bundle.json saved beside it): the provider's signature over the
    manifest, then every chunk. Needs no network (the bundle holds the provider's DID document).

    FILE is either the data as released by `tds use … -o FILE`, or a file in the node's vault, which is
    encrypted at rest: that is opened with the keys in the node's data folder (--dir), node running or not."""
    from connector.payload import manifest as manifests
    from connector.services import vault

    try:
        bundle = jsonbound.loads(bundle_path.read_text())
        lines = manifest_lines(bundle)
        parsed, _, _ = manifests.read_bundle(bundle)
    except (ValueError, manifests.ManifestError) as exc:
        _fail(f"the bundle does not verify: {exc}")
        raise
    try:
        if vault.is_vault_file(file_path):
            if data_dir is None:
                _fail(f"{file_path} is sealed in a node's vault: give --dir (the node's data folder) to check it "
                      "there, or check the data released by `tds use AGREEMENT --use-id ID -o FILE`")
            pieces = _vault_pieces(data_dir, file_path)  # type: ignore[arg-type]
        else:
            pieces = _file_pieces(file_path, parsed.chunk_size)
        pending, index = b"", 0
        for piece in pieces:
            pending += piece
            while index < len(parsed.chunks) and len(pending) >= parsed.chunk_length(index):
                length = parsed.chunk_length(index)
                if not manifests.chunk_ok(parsed, index, pending[:length]):
                    _fail(f"chunk {index} (bytes {index * parsed.chunk_size}-) does not match the manifest")
                pending, index = pending[length:], index + 1
            if index == len(parsed.chunks) and pending:
                _fail(f"the file is longer than the manifest's {parsed.size} bytes")
        if index < len(parsed.chunks):
            _fail(f"chunk {index} (bytes {index * parsed.chunk_size}-) does not match the manifest (the file is "
                  f"shorter than the manifest's {parsed.size} bytes)")
    except (TdsError, OSError, ValueError) as exc:
        _fail(f"{file_path} cannot be read: {getattr(exc, 'message', None) or exc}")
    if as_json:
        _print_json({"file": str(file_path), "matches": True, "manifest": manifest_json(bundle)})
        return
    for line in lines:
        click.echo(line)
    click.echo(f"OK: {file_path} matches the manifest chunk by chunk")


def _file_pieces(path: Path, size: int) -> Any:
    with path.open("rb") as f:
        while piece := f.read(size):
            yield piece


def _vault_pieces(data_dir: Path, path: Path) -> Any:
    from connector.services import vault

    with vault.offline_reader(data_dir, path) as reader:
        yield from vault.read_all(reader)


@main.command()
@node_options
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the JSON report (default: drill-report-TIMESTAMP.json here).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report (the progress goes to stderr).")
@click.option("--allow-tamper", is_flag=True,
              help="Also run counter-reset, which writes to the node's database (needs --dir).")
@click.option("--attack", "only", multiple=True, metavar="NAME", help="Run only this attack (repeatable).")
def drill(data_dir: Path | None, node_url: str | None, token: str | None, report_path: Path | None, as_json: bool,
          allow_tamper: bool, only: tuple[str, ...]) -> None:
    """The security drill: attack this node as a hostile tenant, application and stranger would.

    With the node's admin token (DIR/admin.token, or --node URL --token ADMIN_TOKEN) it hosts two temporary
    participants drill-<hex> and drill-<hex>-peer, runs the attack catalogue against the node's public and
    management listeners (only loopback or addresses in node.trusted_networks), prints one line per attack
    (refused, FAILED, error or skipped), writes a JSON report and removes everything it created. Exits 1 if
    any attack FAILED or could not run. Without --dir the attacks that need the node's folder are errors."""
    from connector.drill import CATALOGUE, DrillOptions, DrillRefused, Target, run_drill

    if only and set(only) - {a.name for a in CATALOGUE}:
        _fail(f"no such attack: {', '.join(sorted(set(only) - {a.name for a in CATALOGUE}))} "
              f"(known: {', '.join(a.name for a in CATALOGUE)})")
    context = click.get_current_context(silent=True)
    ca: str | None = context.meta.get(_CA) if context is not None else None
    try:
        if data_dir is not None:
            target = Target.from_dir(data_dir, node_url=node_url, token=token, ca=ca)
        elif node_url and token:
            target = Target(node_url.rstrip("/"), token, ca=ca, explicit_url=True)
        else:
            _fail("give --dir DIR (the node's data folder) or both --node URL and --token ADMIN_TOKEN")
            return
    except ConfigError as exc:
        _fail(exc.message)
        return
    if allow_tamper and data_dir is None:
        _fail("--allow-tamper needs --dir: counter-reset writes to the node's database")

    def emit(line: str) -> None:
        click.echo(line, err=as_json)

    options = DrillOptions(target, report=report_path, allow_tamper=allow_tamper, only=only, emit=emit)
    try:
        result = asyncio.run(run_drill(options))
    except DrillRefused as exc:
        _fail(str(exc))
        return
    except KeyboardInterrupt:
        # A second Ctrl+C stops the teardown itself: say what is still there.
        left = [what for what, _ in options.cleanup.steps]
        if left:
            click.echo("interrupted; NOT removed: " + "; ".join(reversed(left)), err=True)
        sys.exit(130)
    if as_json:
        _print_json(result.report)
    sys.exit(result.exit_code)


@main.command()
@click.option("--keep-running", is_flag=True, help="Leave the nodes up and print their URLs and tokens.")
def demo(keep_running: bool) -> None:
    """Run a small data space on loopback and narrate what happens."""
    from connector.demo import DemoFailed, run_demo
    from connector.logging import configure

    configure("warning")
    try:
        asyncio.run(run_demo(keep_running=keep_running))
    except DemoFailed as exc:
        _fail(f"demo step failed: {exc}")
    except KeyboardInterrupt:
        pass


# -- memberships and verified attributes -----------------------------------------------------------------

KIND_CHOICE = click.Choice(["membership", "legal-entity", "region", "certification"])


def claim_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The claims of a credential of each kind, as options."""
    for decl, help_text in reversed((
        ("--space", "membership: the data space (an IRI or URN, e.g. urn:tds:space:auto-parts)."),
        ("--role", "membership: the member's role (default: member)."),
        ("--region", "region: the ISO 3166-2 code of the region of establishment, e.g. CN-GD."),
        ("--legal-name", "legal-entity: the registered name."),
        ("--credit-code", "legal-entity: the unified social credit code (GB 32100-2015)."),
        ("--lei", "legal-entity: the Legal Entity Identifier (ISO 17442)."),
        ("--level", "certification: the certification level."),
        ("--software-name", "certification: the certified connector software (default: TDS Connector)."),
        ("--software-version", "certification: its version (default: this connector's)."),
    )):
        fn = click.option(decl, help=help_text)(fn)
    return click.option("--kind", type=KIND_CHOICE, required=True, help="The kind of credential.")(fn)


def claims_of_options(kind: str, options: dict[str, str | None]) -> dict[str, str]:
    """The management API's claim fields of *kind* from the command's options; a readable error for a claim
    that is missing or belongs to another kind."""
    from importlib.metadata import version

    fields = {"space": "dataSpace", "role": "role", "region": "region", "legal_name": "legalName",
              "credit_code": "unifiedSocialCreditCode", "lei": "leiCode", "level": "certificationLevel",
              "software_name": "softwareName", "software_version": "softwareVersion"}
    of_kind = {"membership": {"space", "role"}, "legal-entity": {"legal_name", "credit_code", "lei"},
               "region": {"region"}, "certification": {"level", "software_name", "software_version"}}
    given = {k: v for k, v in options.items() if v is not None}
    other = sorted(set(given) - of_kind[kind])
    if other:
        _fail(f"{', '.join('--' + o.replace('_', '-') for o in other)} is not a claim of a {kind} credential")
    required = {"membership": ["space"], "legal-entity": ["legal_name"], "region": ["region"],
                "certification": ["level"]}[kind]
    missing = [r for r in required if r not in given]
    if missing:
        _fail(f"--{missing[0].replace('_', '-')} is required for --kind {kind}")
    if kind == "legal-entity" and "credit_code" not in given and "lei" not in given:
        _fail("--kind legal-entity needs --credit-code or --lei (or both)")
    if kind == "certification":
        given.setdefault("software_name", "TDS Connector")
        given.setdefault("software_version", version("tds-connector"))
    return {fields[k]: v for k, v in given.items() if v is not None}


def _write_document(output: Path, document: dict[str, Any]) -> None:
    try:
        output.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot write {output}: {exc}")


@main.group()
def credential() -> None:
    """Credentials: memberships and verified attributes this participant issues, holds and asks for."""


@credential.command("issue")
@click.argument("holder", metavar="HOLDER_DID")
@claim_options
@click.option("--valid-until", help="Last day of validity, YYYY-MM-DD (default: node setting, one year).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the credential to this file for the holder to import, instead of delivering it.")
@json_option
@node_options
def credential_issue(holder: str, kind: str, space: str | None, role: str | None, region: str | None,
                     legal_name: str | None, credit_code: str | None, lei: str | None, level: str | None,
                     software_name: str | None, software_version: str | None, valid_until: str | None,
                     output: Path | None, as_json: bool, data_dir: Path | None, node_url: str | None,
                     token: str | None) -> None:
    """Issue a credential about HOLDER_DID, signed by this participant, and deliver it to the holder's node
    (or write it with -o FILE)."""
    claims = claims_of_options(kind, {"space": space, "role": role, "region": region, "legal_name": legal_name,
                                      "credit_code": credit_code, "lei": lei, "level": level,
                                      "software_name": software_name, "software_version": software_version})

    async def go(client: Any) -> tuple[dict[str, Any], str | None]:
        issued = await client.issue_credential(holder, kind, claims, valid_until=valid_until)
        if output is not None:
            return issued, None
        from connector.client import ClientError

        try:
            delivered = await client.deliver_credential(issued["id"])
            issued = {**issued, "deliveredAs": delivered.get("deliveredAs")}
        except ClientError as exc:
            return issued, exc.message
        return issued, None

    issued, not_delivered = _call(data_dir, node_url, token, go)
    if as_json:
        if output is not None:
            _write_document(output, issued["document"])
        _print_json({**issued, "delivered": output is None and not_delivered is None, "deliveryError": not_delivered,
                     "writtenTo": str(output) if output is not None else None})
        if not_delivered is not None:
            sys.exit(1)
        return
    click.echo(f"credential {issued['id']} issued: {kind} of {holder}, valid until {issued['validUntil']}")
    click.echo(f"  revocable at {issued['statusListCredential']} (index {issued['statusIndex']})")
    if output is not None:
        _write_document(output, issued["document"])
        click.echo(f"  written to {output}: the holder imports it with `tds credential import {output.name}`")
    elif not_delivered is not None:
        click.echo(f"  NOT delivered: {not_delivered}")
        click.echo(f"  (write it for the holder with `tds credential export {issued['id']} -o FILE`)")
        sys.exit(1)
    else:
        click.echo(_delivered_line(issued))


def _delivered_line(issued: dict[str, Any]) -> str:
    if issued.get("deliveredAs") == "offered":
        return ("  delivered to the holder's node, where it waits for the holder's acceptance (the holder does not "
                "trust this issuer and already holds as many credentials of issuers it does not trust as it keeps "
                "unasked; its operator accepts it with `tds credential accept ID`)")
    return "  delivered to the holder's node"


@credential.command("import")
@click.argument("file_path", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@node_options
def credential_import(file_path: Path, as_json: bool, data_dir: Path | None, node_url: str | None,
                      token: str | None) -> None:
    """Import a credential about this participant from FILE (checked: holder, issuer's signature, validity,
    revocation)."""
    try:
        document = jsonbound.loads(file_path.read_bytes())
    except (OSError, ValueError) as exc:
        _fail(f"{file_path} is not a JSON credential: {exc}")
        return
    if not isinstance(document, dict):
        _fail(f"{file_path} is not a JSON credential (not an object)")
    held = _call(data_dir, node_url, token, lambda c: c.import_credential(document))
    _done(held, f"credential {held['id']} imported: {held['kind']} from {held['issuer']}, "
                f"valid until {held['validUntil']}", as_json)


@credential.command("request")
@click.argument("issuer", metavar="ISSUER_URL_OR_DID")
@claim_options
@json_option
@node_options
def credential_request(issuer: str, kind: str, space: str | None, role: str | None, region: str | None,
                       legal_name: str | None, credit_code: str | None, lei: str | None, level: str | None,
                       software_name: str | None, software_version: str | None, as_json: bool,
                       data_dir: Path | None, node_url: str | None, token: str | None) -> None:
    """Ask ISSUER for a credential about this participant; its operator approves or rejects it."""
    claims = claims_of_options(kind, {"space": space, "role": role, "region": region, "legal_name": legal_name,
                                      "credit_code": credit_code, "lei": lei, "level": level,
                                      "software_name": software_name, "software_version": software_version})
    sent = _call(data_dir, node_url, token, lambda c: c.ask_credential(issuer, kind, claims))
    _done(sent, f"request {sent['id']} sent to {sent['issuer']}: {sent['state']} (the issuer decides; an approved "
                "credential is delivered to this node)", as_json)


@credential.command("pending")
@click.option("--all", "show_all", is_flag=True, help="Also the approved and rejected ones.")
@click.option("--json", "as_json", is_flag=True)
@node_options
def credential_pending(show_all: bool, as_json: bool, data_dir: Path | None, node_url: str | None,
                       token: str | None) -> None:
    """List the requests holders sent this participant, waiting for a decision."""
    rows = _call(data_dir, node_url, token, lambda c: c.credential_requests("all" if show_all else "pending"))
    if as_json:
        _print_json(rows)
        return
    if not rows:
        click.echo("no requests waiting" if not show_all else "no requests")
    for row in rows:
        claims = ", ".join(f"{k}={v}" for k, v in row["claims"].items())
        click.echo(f"{row['id']}  {row['state']:8}  {row['kind']}  {claims}  from {row['requester']}  "
                   f"{row['receivedAt']}")


@credential.command("approve")
@click.argument("request_id", metavar="ID")
@click.option("--valid-until", help="Last day of validity, YYYY-MM-DD (default: node setting, one year).")
@json_option
@node_options
def credential_approve(request_id: str, valid_until: str | None, as_json: bool, data_dir: Path | None,
                       node_url: str | None, token: str | None) -> None:
    """Approve request ID: issue the credential it asks for and deliver it to the holder."""
    issued = _call(data_dir, node_url, token,
                   lambda c: c.approve_credential_request(request_id, valid_until=valid_until))
    if as_json:
        _print_json(issued)
        if issued.get("deliveryError"):
            sys.exit(1)
        return
    click.echo(f"request {request_id} approved: credential {issued['id']} ({issued['kind']} of {issued['holder']})")
    if issued.get("deliveryError"):
        click.echo(f"  NOT delivered: {issued['deliveryError']}")
        click.echo(f"  (write it for the holder with `tds credential export {issued['id']} -o FILE`)")
        sys.exit(1)
    click.echo(_delivered_line(issued))


@credential.command("reject")
@click.argument("request_id", metavar="ID")
@click.option("--reason", default="", help="Kept with the request.")
@json_option
@node_options
def credential_reject(request_id: str, reason: str, as_json: bool, data_dir: Path | None, node_url: str | None,
                      token: str | None) -> None:
    """Reject request ID."""
    rejected = _call(data_dir, node_url, token, lambda c: c.reject_credential_request(request_id, reason))
    _done(rejected, f"request {request_id} rejected", as_json)


@credential.command("revoke")
@click.argument("credential_id", metavar="ID")
@json_option
@node_options
def credential_revoke(credential_id: str, as_json: bool, data_dir: Path | None, node_url: str | None,
                      token: str | None) -> None:
    """Revoke a credential this participant issued: its bit is set in the published status list."""
    revoked = _call(data_dir, node_url, token, lambda c: c.revoke_credential(credential_id))
    _done(revoked, f"credential {revoked['id']} revoked at {revoked['revokedAt']}; "
                   f"{revoked['statusListCredential']} says so (index {revoked['statusIndex']})", as_json)


@credential.command("list")
@click.option("--json", "as_json", is_flag=True)
@node_options
def credential_list(as_json: bool, data_dir: Path | None, node_url: str | None, token: str | None) -> None:
    """List the credentials this participant issued (with their status), holds, and is offered."""
    found = _call(data_dir, node_url, token, lambda c: c.credentials())
    if as_json:
        _print_json(found)
        return
    click.echo(f"issued ({len(found['issued'])}):")
    for row in found["issued"]:
        delivery = ("delivered, waits for the holder's acceptance" if row.get("deliveredAs") == "offered" else
                    "delivered" if row.get("deliveredAt") else
                    f"not delivered: {row['deliveryError']}" if row.get("deliveryError") else "not delivered")
        click.echo(f"  {row['id']}  {row['kind']:13}  {row['status']:7}  to {row['holder']}  "
                   f"until {row['validUntil']}  {delivery}")
    click.echo(f"held ({len(found['held'])}):")
    for row in found["held"]:
        click.echo(f"  {row['id']}  {row['kind']:13}  {row['status']:7}  from {row['issuer']}  "
                   f"until {row['validUntil']}  ({row['source']})")
    offered = found.get("offered", [])
    if offered:
        click.echo(f"offered ({len(offered)}), waiting for `tds credential accept ID` or `decline ID`:")
    for row in offered:
        click.echo(_offered_line(row))


def _offered_line(row: dict[str, Any]) -> str:
    return (f"  {row['id']}  {row['kind']:13}  {row['status']:7}  from {row['issuer']}  until {row['validUntil']}  "
            f"offered {row['receivedAt']}")


@credential.command("offered")
@click.option("--json", "as_json", is_flag=True)
@node_options
def credential_offered(as_json: bool, data_dir: Path | None, node_url: str | None, token: str | None) -> None:
    """List the credentials offered to this participant: delivered by issuers it does not trust beyond those it
    holds unasked, never presented until accepted."""
    rows = _call(data_dir, node_url, token, lambda c: c.offered_credentials())
    if as_json:
        _print_json(rows)
        return
    if not rows:
        click.echo("no credentials offered")
    for row in rows:
        click.echo(_offered_line(row).strip())


@credential.command("accept")
@click.argument("credential_id", metavar="ID")
@json_option
@node_options
def credential_accept(credential_id: str, as_json: bool, data_dir: Path | None, node_url: str | None,
                      token: str | None) -> None:
    """Accept offered credential ID: checked again, then held and presented (even beyond the credentials held of
    issuers this participant does not trust: accepting is the operator's choice)."""
    held = _call(data_dir, node_url, token, lambda c: c.accept_credential(credential_id))
    _done(held, f"credential {held['id']} accepted: {held['kind']} from {held['issuer']}, held until "
                f"{held['validUntil']}", as_json)


@credential.command("decline")
@click.argument("credential_id", metavar="ID")
@json_option
@node_options
def credential_decline(credential_id: str, as_json: bool, data_dir: Path | None, node_url: str | None,
                       token: str | None) -> None:
    """Decline offered credential ID: it is dropped."""
    _call(data_dir, node_url, token, lambda c: c.decline_credential(credential_id))
    _done({"id": credential_id, "declined": True}, f"credential {credential_id} declined", as_json)


@credential.command("export")
@click.argument("credential_id", metavar="ID")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="File to write (default: stdout).")
@node_options
def credential_export(credential_id: str, output: Path | None, data_dir: Path | None, node_url: str | None,
                      token: str | None) -> None:
    """Write a credential this participant issued, holds or is offered (the signed document)."""

    async def go(client: Any) -> dict[str, Any]:
        from connector.client import ClientError

        for read in (client.issued_credential, client.held_credential, client.offered_credential):
            try:
                return await read(credential_id)  # type: ignore[no-any-return]
            except ClientError as exc:
                if exc.status != 404:
                    raise
        raise ClientError(404, f"this participant issued, holds and is offered no credential {credential_id}")

    found = _call(data_dir, node_url, token, go)
    if output is None:
        _print_json(found["document"])
        return
    _write_document(output, found["document"])
    click.echo(f"credential {credential_id} written to {output}")


@credential.command("remove")
@click.argument("credential_id", metavar="ID")
@json_option
@node_options
def credential_remove(credential_id: str, as_json: bool, data_dir: Path | None, node_url: str | None,
                      token: str | None) -> None:
    """Stop holding (and presenting) a credential."""

    async def go(client: Any) -> None:
        from connector.client import ClientError

        try:
            await client.remove_credential(credential_id)
        except ClientError as exc:
            if exc.status == 404 and any(o["id"] == credential_id for o in await client.offered_credentials()):
                raise ClientError(404, f"credential {credential_id} is offered, not held: "
                                       f"`tds credential decline {credential_id}` drops it") from None
            raise

    _call(data_dir, node_url, token, go)
    _done({"id": credential_id, "removed": True}, f"credential {credential_id} removed", as_json)


@main.group()
def trust() -> None:
    """The issuers this participant trusts, and for which claims (besides the node's [[trust]] list)."""


@trust.command("add")
@click.argument("issuer", metavar="ISSUER_DID")
@click.option("--claims", required=True, help="Comma-separated: membership, legal-entity, region, certification.")
@click.option("--space", "spaces", multiple=True, help="Memberships only of this data space (repeatable).")
@json_option
@node_options
def trust_add(issuer: str, claims: str, spaces: tuple[str, ...], as_json: bool, data_dir: Path | None,
              node_url: str | None, token: str | None) -> None:
    """Trust ISSUER_DID for the claims named (replacing what it was trusted for)."""
    kinds = [k.strip() for k in claims.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KIND_CHOICE.choices]
    if unknown or not kinds:
        _fail(f"--claims: unknown kind {', '.join(unknown) or '(none)'} (membership, legal-entity, region, "
              "certification)")
    added = _call(data_dir, node_url, token, lambda c: c.trust_issuer(issuer, kinds, list(spaces) or None))
    where = f" (memberships of {', '.join(added['spaces'])})" if added.get("spaces") else ""
    _done(added, f"trusting {added['issuer']} for {', '.join(added['claims'])}{where}", as_json)


@trust.command("list")
@click.option("--json", "as_json", is_flag=True)
@node_options
def trust_list(as_json: bool, data_dir: Path | None, node_url: str | None, token: str | None) -> None:
    """List the trusted issuers: this participant's own and the node's ([[trust]] in tds.toml)."""
    rows = _call(data_dir, node_url, token, lambda c: c.trust_list())
    if as_json:
        _print_json(rows)
        return
    if not rows:
        click.echo("no trusted issuers: no peer's credential counts (try: tds trust add DID --claims membership)")
    for row in rows:
        where = f"  spaces {', '.join(row['spaces'])}" if row.get("spaces") else ""
        click.echo(f"{row['issuer']}  {', '.join(row['claims'])}{where}  ({row['source']})")


@trust.command("remove")
@click.argument("issuer", metavar="ISSUER_DID")
@json_option
@node_options
def trust_remove(issuer: str, as_json: bool, data_dir: Path | None, node_url: str | None, token: str | None) -> None:
    """Stop trusting ISSUER_DID (claims already counted are counted again without it)."""
    _call(data_dir, node_url, token, lambda c: c.distrust_issuer(issuer))
    _done({"issuer": issuer, "trusted": False}, f"{issuer} is no longer trusted", as_json)


def claims_lines(claims: dict[str, Any]) -> list[str]:
    """A peer's claims as a few readable lines: what counts, and what not and why."""
    lines = []
    for c in claims["counted"]:
        values = ", ".join(f"{k}={v}" for k, v in c["claims"].items())
        lines.append(f"  counts: {c['kind']} {values} (issuer {c['issuer']}, until {c['until']})")
    for n in claims["notCounted"]:
        lines.append(f"  not counted: {n['kind'] or 'credential'} {n['credentialId'] or ''}: {n['reason']}")
    return lines or ["  no credentials shown"]


@peer.command("claims")
@click.argument("did", required=False)
@click.option("--json", "as_json", is_flag=True)
@node_options
def peer_claims(did: str | None, as_json: bool, data_dir: Path | None, node_url: str | None,
                token: str | None) -> None:
    """The claims peers (or the peer DID) have shown this participant in handshakes."""
    rows = _call(data_dir, node_url, token, lambda c: c.peer_claims(did))
    if as_json:
        _print_json(rows)
        return
    if not rows:
        click.echo("no claims shown yet (a peer shows its credentials in the handshake: tds peer verify PEER)")
    for row in rows:
        click.echo(row["holder"])
        for line in claims_lines(row):
            click.echo(line)
