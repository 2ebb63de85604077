"""Per-client limits: requests and tokens per minute and requests in flight, per API key and
per route, kept in this process or shared through Redis (`gateway.ratelimit.limiter`)."""
