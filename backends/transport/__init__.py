"""The transport beneath the engines' adapters and the gateway's server.

An HTTP/1.1 client, socket writes gathered per turn of the event loop, and busy polling.
"""
