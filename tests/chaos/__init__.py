"""Chaos and fault suite: real redis-servers, real worker processes, ledgers outside Redis.

See ``tests/chaos/README.md`` for what each scenario does and how the checker decides.
"""
