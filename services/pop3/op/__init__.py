"""Command handlers, one module per command family; each returns a reply value and never writes to the socket."""
