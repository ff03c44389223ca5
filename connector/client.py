"""An async client for the management API. The CLI, the demo and the examples all use it."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from connector.bootstrap import read_token
from connector.config import load_config


class ClientError(Exception):
    """The management API refused a call or could not be reached."""

    def __init__(self, status: int, message: str, path: str | None = None) -> None:
        super().__init__(f"{message} (field {path})" if path else message)
        self.status = status
        self.message = message
        self.path = path


class ManagementClient:
    def __init__(self, base_url: str, token: str, *, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> ManagementClient:
        config = load_config(data_dir)
        host = config.node.management_host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return cls(f"http://{host}:{config.node.management_port}", read_token(data_dir))

    async def __aenter__(self) -> ManagementClient:
        return self

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        url = f"{self.base_url}/api/management/v1{path}"
        try:
            async with self._session.request(method, url, json=body) as resp:
                data = await resp.json(content_type=None) if resp.content_length != 0 else None
                if resp.status >= 400:
                    data = data if isinstance(data, dict) else {}
                    raise ClientError(resp.status, str(data.get("message", resp.reason)), data.get("path"))
                return data
        except aiohttp.ClientConnectionError as exc:
            raise ClientError(0, f"cannot reach the node's management API at {self.base_url}: {exc}") from exc

    async def participant(self) -> dict[str, Any]:
        return await self._call("GET", "/participant")  # type: ignore[no-any-return]

    async def verify_peer(self, peer: str) -> dict[str, Any]:
        return await self._call("POST", "/peers/verify", {"peer": peer})  # type: ignore[no-any-return]

    async def peers(self) -> list[dict[str, Any]]:
        return (await self._call("GET", "/peers"))["peers"]  # type: ignore[no-any-return]
