"""Failover runs on a real Redis Cluster and a real Sentinel group: ``python -m tests.scale``."""
