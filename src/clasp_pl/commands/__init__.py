"""One module per ``clasp`` subcommand: each parses its arguments and calls the library."""
