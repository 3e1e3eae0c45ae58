"""Subcommands of the ``pyro-contrast`` command line (one module per group)."""
