"""One module per CLI subcommand: argument definitions and a thin ``run(args)``."""
