"""The ``tds`` command (also ``python -m connector``): a plain ``tds serve --dir DIR`` starts the node without
loading the rest of the command line (:mod:`connector.launcher`); every other command line is
:mod:`connector.cli`'s."""

from __future__ import annotations

import sys

from connector.launcher import serve, serve_dir


def main() -> None:
    data_dir = serve_dir(sys.argv[1:])
    if data_dir is not None:
        serve(data_dir)
        return
    from connector.cli import main as command_line

    command_line()


if __name__ == "__main__":
    main()
