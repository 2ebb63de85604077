"""The HTTP/1.1 transport the gateway serves with: protocol, request cycle, workers."""
