"""Ops: see abuse, stop it, answer privacy requests, keep the books straight.

`python -m ops ...` (CLI), `/ops/*` (JSON API), `/ops` (page), `/metrics`, and the LiveKit
webhook that closes sessions a crashed worker left open. The logic lives in one module per
concern (queries, blocks, privacy, audit, webhook...); the CLI and the API only render it.
"""
