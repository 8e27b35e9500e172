"""Postroom's services, one package each."""
