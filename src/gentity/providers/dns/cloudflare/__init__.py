"""The ``cloudflare`` DNS provider: records in one Cloudflare zone, over the v4 REST API."""
