"""One module per CLI action. Each has ``add_parser(subparsers)`` and ``run(args) -> int``."""
