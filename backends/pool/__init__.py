"""Replica pools: one backend served by several endpoints of the same engine.

A pool is a `Backend` built from one adapter per endpoint (each made by its kind's own factory
with the endpoint's address), so every kind pools alike and the gateway above still sees one
named backend: routes, shadow, canary, fallback and the backend's circuit are unchanged.

    pooled.PooledBackend   the Backend: picks, retries on another endpoint, probes each one
    balance.Balancer       which endpoint: power of two choices, round robin, bounded affinity
    balance.Endpoint       one endpoint's state: in flight, readiness, ejection
    affinity               the key a request sticks by: its `user`, or its prompt's prefix
    discovery              endpoints from DNS (a Kubernetes headless Service)
    stats                  what a pool counts, for the gateway's metrics
"""
