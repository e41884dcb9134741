"""Benchmarks: `bench/run.py` (side by side against other task queues) and `bench/hot_path.py`."""
