"""Container health check: GET /healthz on this node's public listener; exit 0 if it answers 200.

Reads the node's config from $TDS_DIR/tds.toml (default /data) to find the port and whether it serves
HTTPS. It connects to the loopback address inside the container, so the certificate (issued for the
service name) is not checked here: this is a liveness probe, not a trust decision.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request
from pathlib import Path

from connector.config import load_config


def main() -> int:
    try:
        node = load_config(Path(os.environ.get("TDS_DIR", "/data"))).node
    except Exception as exc:  # a probe: any failure is "unhealthy", with its reason
        print(f"healthcheck: no node to check: {exc}", file=sys.stderr)
        return 1
    host = "127.0.0.1" if node.host in ("0.0.0.0", "", "::") else node.host
    scheme = "https" if node.tls_cert else "http"
    context = ssl._create_unverified_context() if node.tls_cert else None
    try:
        with urllib.request.urlopen(f"{scheme}://{host}:{node.port}/healthz", timeout=3, context=context) as resp:
            return 0 if resp.status == 200 else 1
    except OSError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
