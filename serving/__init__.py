"""Serving: lists looked up in Redis by user id, from Python, the CLI or HTTP."""
