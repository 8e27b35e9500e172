"""Mail in and out of Postroom: Dovecot maildirs (with their POP3 UIDLs) and mbox files, through the store."""
