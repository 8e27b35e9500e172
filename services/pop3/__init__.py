"""The POP3 service: RFC 1939 with STLS, SASL, CAPA and UTF8 over the store's mailboxes and maildrop locks."""
