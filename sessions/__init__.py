"""Session records in Redis (created at admission, completed by the worker)."""
