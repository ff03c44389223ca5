"""``tds init``: create a node's data folder — config, keys, database and a first management token."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from connector.config import CONFIG_FILE, Config, NodeSection, ParticipantSection, parse_config, render_config
from connector.errors import ConfigError
from connector.identity import did as dids
from connector.identity.keys import ParticipantKeys, save_keys
from connector.protocol.export_control import ExportRule
from connector.store.db import Store
from connector.store.repository import Participant, add_participant_sync, add_token_sync

DB_FILE = "tds.db"
TOKEN_FILE = "management.token"


@dataclass(frozen=True)
class InitResult:
    config: Config
    token: str
    did: str


def keys_dir(data_dir: Path, participant: str) -> Path:
    return data_dir / "keys" / participant


def participant_did(config: Config, keys: ParticipantKeys, name: str, method: str) -> str:
    if method == "key":
        return dids.did_key_for(bytes(keys.verify_key))
    return dids.did_web_for(config.public_url, name)


def write_secret_text(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


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
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if (data_dir / CONFIG_FILE).exists():
        raise ConfigError(f"{data_dir / CONFIG_FILE} already exists; this folder already holds a node")
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
    keys = ParticipantKeys.generate()
    save_keys(keys_dir(data_dir, name), keys)
    did = participant_did(config, keys, name, did_method)
    token = secrets.token_urlsafe(32)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    record = Participant(id=name, name=name, did=did, legal_name=config.participant.legal_name, region=region,
                         industry=industry, contact=contact, created_at=now)
    store = Store(data_dir / DB_FILE)

    def setup(db: object) -> None:
        from connector.store.db import migrate

        migrate(db)  # type: ignore[arg-type]
        add_participant_sync(db, msgspec.structs.asdict(record))  # type: ignore[arg-type]
        add_token_sync(db, token, name, "cli", admin=False, now=now)  # type: ignore[arg-type]

    store.read_sync(setup)
    write_secret_text(data_dir / TOKEN_FILE, token + "\n")
    write_secret_text(data_dir / CONFIG_FILE, text)
    return InitResult(config, token, did)


def read_token(data_dir: Path) -> str:
    try:
        return (data_dir / TOKEN_FILE).read_text().strip()
    except FileNotFoundError as exc:
        raise ConfigError(f"no {TOKEN_FILE} in {data_dir}") from exc
