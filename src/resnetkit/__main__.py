"""``python -m resnetkit``: the same command line as ``resnetkit``."""

from resnetkit.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
