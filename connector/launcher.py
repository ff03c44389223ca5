"""``tds serve``: run a node from its data folder, starting no more than the node needs.

The command line (:mod:`connector.cli`) is large and loads click; a plain ``tds serve --dir DIR`` (or
``python -m connector serve --dir DIR``) starts here without loading it (:func:`serve_dir`, by
:mod:`connector.__main__`), because a node's start-up is what every restart costs. Any other command line,
``serve --help`` or a mistyped option included, goes to :mod:`connector.cli`, which calls :func:`serve` as well.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

#: Exit codes, the same for every command (``tds --help``): refused or failed, a usage error, no node to reach.
EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3
#: The environment variable ``tds serve`` reads its data folder from when ``--dir`` is not given.
DIR_VARIABLE = "TDS_DIR"


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """End the command with ``error: MESSAGE`` on stderr and exit code *code*."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def serve_dir(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> Path | None:
    """The data folder of a plain ``serve`` command line (*argv* without the program name): ``serve --dir DIR``,
    ``serve --dir=DIR``, or ``serve`` with :data:`DIR_VARIABLE` set. None for any other command line."""
    if not argv or argv[0] != "serve":
        return None
    match list(argv[1:]):
        case ["--dir", value] if value and not value.startswith("-"):
            return Path(value)
        case [option] if option.startswith("--dir=") and option != "--dir=":
            return Path(option.removeprefix("--dir="))
        case [] if environ.get(DIR_VARIABLE):
            return Path(environ[DIR_VARIABLE])
    return None


def serve(data_dir: Path, *, port: int | None = None, management_port: int | None = None) -> None:
    """Run the node in *data_dir* until SIGTERM or Ctrl+C. A node that cannot start ends the command with one line
    naming why (a bad config, a database this release cannot run on, a port in use) and exit code 2 or 1.

    *port*, *management_port*: instead of the configured ones (one of several processes of a node that share its
    data folder and a PostgreSQL store, behind one address)."""
    from connector import filemodes
    from connector.config import load_config
    from connector.errors import ConfigError, TdsError
    from connector.logging import configure

    filemodes.restrict_umask()  # before anything is opened: nothing the node writes is open to other users
    try:
        config = load_config(data_dir)
    except ConfigError as exc:
        fail(exc.message)
    if port is not None or management_port is not None:
        import msgspec

        from connector.bootstrap import store_location
        from connector.store.pg import PgLocation

        if not isinstance(store_location(data_dir, config), PgLocation):
            fail("--port and --management-port start one more process of a node, which needs a PostgreSQL store "
                 "(store = \"postgresql://…\" in tds.toml): SQLite has one process")
        node = msgspec.structs.replace(config.node, port=config.node.port if port is None else port,
                                       management_port=(config.node.management_port if management_port is None
                                                        else management_port))
        config = msgspec.structs.replace(config, node=node)
    configure(config.node.log_level)
    # The start-up allocates many objects and frees few: the cyclic garbage collector would walk them all several
    # times while the modules load, finding next to nothing. It runs again once the node listens.
    gc.disable()
    try:
        from connector.node import serve as serve_node

        asyncio.run(serve_node(data_dir, started=gc.enable, config=config))
    except ConfigError as exc:
        fail(exc.message)
    except TdsError as exc:  # the node cannot start as things stand: a database it cannot run on, for one
        fail(exc.message, EXIT_REFUSED)
    except OSError as exc:
        fail(f"cannot start: {exc}")
    finally:
        gc.enable()
