"""Fault injection: a TCP proxy that cuts, stalls and resets; a hostile MX; a ledger of what was accepted."""
