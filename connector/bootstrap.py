"""``tds init``: create a node's data folder — config, node key, the first participant's keys, database, a
first management token for that participant and the node's admin token.

The helpers here are also what the node uses to add a participant at run time (one way to make keys and
DIDs)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from connector import filemodes
from connector.config import CONFIG_FILE, Config, NodeSection, ParticipantSection, parse_config, render_config
from connector.errors import ConfigError
from connector.identity import did as dids
from connector.identity.keys import ParticipantKeys, load_node_key, save_keys
from connector.protocol.export_control import ExportRule
from connector.store.db import Location, Store
from connector.store.location import PgLocation, is_postgres_url, schema_for_folder
from connector.store.repository import Participant, add_participant_sync, add_token_sync

DB_FILE = "tds.db"
#: The PostgreSQL store of every node whose configuration names none, each node in a schema of its own named after
#: its data folder (how the test suite runs on PostgreSQL: ``make test-postgres``).
STORE_ENV = "TDS_STORE"
TOKEN_FILE = "management.token"
#: The node's admin token: manages participants, reads no participant's data.
ADMIN_TOKEN_FILE = "admin.token"


class InitResult(msgspec.Struct, frozen=True):
    config: Config
    token: str
    did: str
    admin_token: str


def keys_dir(data_dir: Path, participant: str) -> Path:
    return data_dir / "keys" / participant


def keys_root(data_dir: Path) -> Path:
    return data_dir / "keys"


def node_key(data_dir: Path, *, create: bool = False) -> bytes | None:
    """The node key that seals participants' keys; None for a folder made before there was one."""
    root = keys_root(data_dir)
    if not create and not (root / "node.key").exists():
        return None
    return load_node_key(root, create=create)


def new_participant_keys(data_dir: Path, name: str) -> ParticipantKeys:
    """Generate a participant's keys and store them sealed with the node key (made if missing)."""
    keys = ParticipantKeys.generate()
    key = node_key(data_dir, create=True)
    assert key is not None
    save_keys(keys_dir(data_dir, name), keys, key)
    return keys


def new_token() -> str:
    return secrets.token_urlsafe(32)


def participant_did(config: Config, keys: ParticipantKeys, name: str, method: str) -> str:
    if method == "key":
        return dids.did_key_for(bytes(keys.verify_key))
    return dids.did_web_for(config.public_url, name)


def write_secret_text(path: Path, text: str) -> None:
    """Write *text* to *path*, mode 0600 (also when *path* existed with a looser mode)."""
    filemodes.write_private(path, text.encode())


def init_node(
    data_dir: Path,
    *,
    name: str,
    legal_name: str | None = None,
    port: int = 8181,
    management_port: int | None = None,
    host: str = "127.0.0.1",
    public_url: str | None = None,
    region: str = "CN",
    industry: str = "",
    contact: str = "",
    did_method: str = "web",
    dev_mode: bool = False,
    trusted_networks: tuple[str, ...] = (),
) -> InitResult:
    _check_new(data_dir)
    url = public_url or f"http://127.0.0.1:{port}"
    config = Config(
        node=NodeSection(
            public_url=url, host=host, port=port,
            management_port=management_port if management_port is not None else (port + 1 if port else 0),
            dev_mode=dev_mode, trusted_networks=list(trusted_networks),
        ),
        participant=ParticipantSection(
            name=name, legal_name=legal_name or name, region=region, industry=industry, contact=contact,
            did_method="key" if did_method == "key" else "web",
        ),
    )
    if region == "CN" or region.startswith("CN-"):
        # The default rule set of a node in China: core and personal data stay in the country.
        config = msgspec.structs.replace(
            config, export_control=[ExportRule(region="CN", data_classes=["core", "personal"])])
    text = render_config(config)
    config = parse_config(text)  # the same checks as at start, with field names in the errors
    return _create(data_dir, config, text, name, did_method)


def init_from_config(data_dir: Path, text: str) -> InitResult:
    """Create a node in *data_dir* whose settings all come from *text* (a whole ``tds.toml``, written as
    given, comments included): how a container starts a node from a mounted config file."""
    config = parse_config(text)
    _check_new(data_dir)
    return _create(data_dir, config, text, config.participant.name, config.participant.did_method)


def _check_new(data_dir: Path) -> None:
    if (data_dir / CONFIG_FILE).exists():
        raise ConfigError(f"{data_dir / CONFIG_FILE} already exists; this folder already holds a node")
    # The node's folder is its own alone (0700), also when it existed before with a looser mode: the
    # database, tokens and vault inside must not be reachable by other local users.
    try:
        filemodes.make_private(data_dir)
    except OSError as exc:
        raise ConfigError(f"{data_dir} cannot be made the node's own folder (mode 0700): {exc}") from exc


def store_location(data_dir: Path, config: Config) -> Location:
    """Where the node in *data_dir* keeps its data: ``store`` in its configuration, else ``$TDS_STORE`` (a schema
    per data folder, named after the URL's ``schema`` and the folder), else the SQLite file ``tds.db`` in it."""
    import os

    if config.store:
        return PgLocation.parse(config.store)
    fallback = os.environ.get(STORE_ENV, "")
    if fallback and is_postgres_url(fallback):
        prefix = PgLocation.parse(fallback).schema
        return PgLocation.parse(fallback, schema=schema_for_folder(str(data_dir.resolve()), prefix))
    return data_dir / DB_FILE


def _create(data_dir: Path, config: Config, text: str, name: str, did_method: str) -> InitResult:
    """Keys, database, tokens and config file of a new node."""
    region, industry, contact = config.participant.region, config.participant.industry, config.participant.contact
    keys = new_participant_keys(data_dir, name)
    did = participant_did(config, keys, name, did_method)
    token, admin_token = new_token(), new_token()
    now = datetime.now(UTC).isoformat(timespec="seconds")
    record = Participant(id=name, name=name, did=did, legal_name=config.participant.legal_name, region=region,
                         industry=industry, contact=contact, created_at=now)
    store = Store(store_location(data_dir, config))

    def setup(db: object) -> None:
        from connector.store.db import migrate

        migrate(db)  # type: ignore[arg-type]
        add_participant_sync(db, msgspec.structs.asdict(record))  # type: ignore[arg-type]
        add_token_sync(db, token, name, "cli", admin=False, now=now)  # type: ignore[arg-type]
        add_token_sync(db, admin_token, None, "admin", admin=True, now=now)  # type: ignore[arg-type]

    store.read_sync(setup)
    write_secret_text(data_dir / TOKEN_FILE, token + "\n")
    write_secret_text(data_dir / ADMIN_TOKEN_FILE, admin_token + "\n")
    write_secret_text(data_dir / CONFIG_FILE, text)
    filemodes.make_dir(data_dir / "files" / name)  # the participant's own files: what its assets may name
    return InitResult(config, token, did, admin_token)


def read_token(data_dir: Path, *, admin: bool = False) -> str:
    name = ADMIN_TOKEN_FILE if admin else TOKEN_FILE
    try:
        return (data_dir / name).read_text().strip()
    except FileNotFoundError as exc:
        raise ConfigError(f"no {name} in {data_dir}") from exc
