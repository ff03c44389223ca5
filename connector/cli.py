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

from connector.errors import ConfigError, TdsError

T = TypeVar("T")


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _run(coro: Awaitable[T]) -> T:
    from connector.client import ClientError

    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except (ClientError, TdsError) as exc:
        _fail(str(exc))
        raise  # unreachable


def _client(data_dir: Path | None, node: str | None, token: str | None) -> Any:
    from connector.client import ManagementClient

    if node and token:
        return ManagementClient(node, token)
    if data_dir is None:
        _fail("give --dir DIR (a node's data folder) or both --node URL and --token TOKEN")
    try:
        client = ManagementClient.for_data_dir(data_dir)  # type: ignore[arg-type]
    except ConfigError as exc:
        _fail(str(exc))
        raise
    if node:
        client.base_url = node.rstrip("/")
    return client


def node_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--token", envvar="TDS_TOKEN", help="Management token (default: DIR/management.token).")(fn)
    fn = click.option("--node", "node_url", envvar="TDS_NODE", help="Management API URL of a running node.")(fn)
    fn = click.option("--dir", "data_dir", type=click.Path(path_type=Path), envvar="TDS_DIR",
                      help="The node's data folder.")(fn)
    return fn


@click.group()
@click.version_option(package_name="tds-connector")
def main() -> None:
    """TDS Connector: a trusted data space node (DSP 2025-1, ODRL usage control)."""


@main.command()
@click.option("--dir", "data_dir", type=click.Path(path_type=Path), required=True, help="Data folder to create.")
@click.option("--name", required=True, help="Participant name (lowercase letters, digits, '-').")
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
def init(data_dir: Path, name: str, legal_name: str | None, port: int, management_port: int | None, host: str,
         public_url: str | None, region: str, industry: str, contact: str, did_method: str, dev: bool,
         trusted: tuple[str, ...]) -> None:
    """Create a node: config, keys (mode 0600) and a first management token."""
    from connector.bootstrap import TOKEN_FILE, init_node

    try:
        result = init_node(data_dir, name=name, legal_name=legal_name, port=port, management_port=management_port,
                           host=host, public_url=public_url, region=region, industry=industry, contact=contact,
                           did_method=did_method, dev_mode=dev, trusted_networks=trusted)
    except ConfigError as exc:
        hint = " (pass --dev for a local node, or --public-url https://...)" if "https" in exc.message else ""
        _fail(exc.message + hint)
        return
    click.echo(f"Created node in {data_dir}")
    click.echo(f"  participant  {name}  {result.did}")
    click.echo(f"  public URL   {result.config.public_url}")
    click.echo(f"  token        written to {data_dir / TOKEN_FILE} (mode 0600)")
    click.echo(f"Start it with: tds serve --dir {data_dir}")


@main.command()
@click.option("--dir", "data_dir", type=click.Path(path_type=Path), required=True, envvar="TDS_DIR")
def serve(data_dir: Path) -> None:
    """Run the node until SIGTERM or Ctrl+C."""
    from connector.config import load_config
    from connector.logging import configure

    try:
        config = load_config(data_dir)
    except ConfigError as exc:
        _fail(exc.message)
        return
    configure(config.node.log_level)
    from connector.node import serve as serve_node

    try:
        asyncio.run(serve_node(data_dir))
    except ConfigError as exc:
        _fail(exc.message)
    except OSError as exc:
        _fail(f"cannot start: {exc}")


@main.command()
@click.option("--dir", "data_dir", type=click.Path(path_type=Path), required=True, envvar="TDS_DIR")
def info(data_dir: Path) -> None:
    """Print the node's DIDs, endpoints and key fingerprints (from its data folder)."""
    from connector.bootstrap import keys_dir, participant_did
    from connector.config import load_config
    from connector.identity.keys import load_keys

    try:
        config = load_config(data_dir)
        name = config.participant.name
        keys = load_keys(keys_dir(data_dir, name))
    except (ConfigError, OSError, ValueError) as exc:
        _fail(str(exc))
        return
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
        ("management API", f"http://{config.node.management_host}:{config.node.management_port}/api/management/v1"),
        ("Ed25519 key", fp["ed25519"]),
        ("X25519 key", fp["x25519"]),
        ("dev mode", "on" if config.node.dev_mode else "off"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key.ljust(width)}  {value}")


@main.group()
def peer() -> None:
    """Peers: verify who they are."""


@peer.command("verify")
@click.argument("peer_ref", metavar="PEER")
@node_options
def peer_verify(peer_ref: str, data_dir: Path | None, node_url: str | None, token: str | None) -> None:
    """Handshake with PEER (a node URL or a did:web) and verify its signed self-description."""

    async def go() -> dict[str, Any]:
        async with _client(data_dir, node_url, token) as client:
            return await client.verify_peer(peer_ref)  # type: ignore[no-any-return]

    result = _run(go())
    p = result["peer"]
    click.echo(f"verified {p['legalName']} ({p['region']}) {p['id']}")
    click.echo(f"  DSP endpoint {result['dspEndpoint']}")


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
        click.echo(f"{p['did']}  {p['legal_name']}  {p['region']}  verified {p['verified_at']}")


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
