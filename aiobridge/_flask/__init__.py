"""The Flask extension's private parts: the per-request scope of async work."""
