"""Helpers for tests and examples: start real nodes on free loopback ports and clean them up."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connector.bootstrap import init_node
from connector.client import ManagementClient
from connector.node import Node


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningNode:
    node: Node
    client: ManagementClient
    token: str
    data_dir: Path

    @property
    def participant(self) -> Any:
        first = self.node.first_participant()
        assert first is not None
        return first

    @property
    def public_url(self) -> str:
        return self.node.config.public_url


class NodeFactory:
    """Start nodes in the current event loop; :meth:`close` stops every one of them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[RunningNode] = []

    async def start(self, name: str, *, dev_mode: bool = True, region: str = "CN-GD", legal_name: str | None = None,
                    trusted_networks: tuple[str, ...] = (), did_method: str = "web") -> RunningNode:
        port = free_port()
        data_dir = self.root / name
        result = init_node(data_dir, name=name, legal_name=legal_name or f"{name.title()} Co.", port=port,
                           management_port=free_port(), region=region, dev_mode=dev_mode,
                           trusted_networks=trusted_networks, did_method=did_method)
        node = Node(data_dir, result.config)
        await node.start()
        running = RunningNode(node, ManagementClient(node.management_url, result.token), result.token, data_dir)
        self.nodes.append(running)
        return running

    async def restart(self, running: RunningNode) -> RunningNode:
        await running.node.stop()
        node = Node(running.data_dir)
        await node.start()
        running.node = node
        return running

    async def close(self) -> None:
        for running in reversed(self.nodes):
            await running.client.close()
            await running.node.stop()
        self.nodes.clear()
