"""The hot path: keys, body parsing, routing, admission, and relaying the answer."""
