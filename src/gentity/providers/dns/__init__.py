"""DNS providers: the records that give instances their subdomains. One interface (``base``),
one registry."""
