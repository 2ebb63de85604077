"""Engine adapters behind the gateway: one module per engine, one `Backend` protocol."""
