"""One module per participant of the side-by-side benchmark (see bench/README.md).

This file is imported by every worker process of every peer, so it stays free of imports: the
registry below is plain data that `bench/run.py` reads to build each peer's virtualenv.
"""

from __future__ import annotations

#: name -> module under bench.peers, the virtualenv it runs in, what pip installs there, and
#: the distribution whose version is reported. Peers need their own virtualenvs because their
#: redis-py pins conflict (arq: redis<6, saq[redis]: <8, taskiq-redis: >=8, kombu: >=6.4).
PEERS: dict[str, dict[str, object]] = {
    "floor": {
        "module": "floor_peer",
        "venv": "conveyor",
        "requires": [],
        "dist": "redis",
        "kind": "floor",
    },
    "floor-noresults": {
        "module": "floor_peer",
        "venv": "conveyor",
        "requires": [],
        "dist": "redis",
        "kind": "floor",
    },
    "conveyor": {
        "module": "conveyor_peer",
        "venv": "conveyor",
        "requires": ["-e", "{repo}", "redis[hiredis]", "matplotlib"],
        "dist": "conveyor-queue",
        "kind": "subject",
    },
    "celery": {
        "module": "celery_peer",
        "venv": "celery",
        "requires": ["celery[redis]", "redis[hiredis]"],
        "dist": "celery",
        "kind": "peer",
    },
    "rq": {
        "module": "rq_peer",
        "venv": "rq",
        "requires": ["rq", "redis[hiredis]"],
        "dist": "rq",
        "kind": "peer",
    },
    "dramatiq": {
        "module": "dramatiq_peer",
        "venv": "dramatiq",
        "requires": ["dramatiq[redis]", "redis[hiredis]"],
        "dist": "dramatiq",
        "kind": "peer",
    },
    "arq": {
        "module": "arq_peer",
        "venv": "arq",
        "requires": ["arq", "redis[hiredis]"],
        "dist": "arq",
        "kind": "peer",
    },
    "taskiq": {
        "module": "taskiq_peer",
        "venv": "taskiq",
        "requires": ["taskiq", "taskiq-redis", "redis[hiredis]"],
        "dist": "taskiq",
        "kind": "peer",
    },
    "streaq": {
        "module": "streaq_peer",
        "venv": "streaq",
        "requires": ["streaq", "redis[hiredis]"],
        "dist": "streaq",
        "kind": "peer",
    },
    "saq": {
        "module": "saq_peer",
        "venv": "saq",
        # saq 0.26 imports typing_extensions without declaring it: installed here so it runs.
        "requires": ["saq[redis]", "redis[hiredis]", "typing_extensions"],
        "dist": "saq",
        "kind": "peer",
    },
    "huey": {
        "module": "huey_peer",
        "venv": "huey",
        "requires": ["huey[redis]", "redis[hiredis]"],
        "dist": "huey",
        "kind": "peer",
    },
}
