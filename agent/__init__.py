"""The LiveKit Agents worker that runs the demo personas (see agent/worker.py)."""
