"""``GET /health``: database, queue and the live workers."""
