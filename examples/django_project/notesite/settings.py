"""Settings of the Django example: Django's task framework on Conveyor.

Redis: CONVEYOR_REDIS_URL (else REDIS_URL, else localhost); namespace: EXAMPLE_NAMESPACE.
"""

import os
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "example-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "notesite.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    # Django 6 has django.tasks built in; Django 5.2 needs the django-tasks backport's app.
    *(["django_tasks"] if django.VERSION < (6, 0) else []),
    "conveyor.django",  # `manage.py conveyor_worker`
    "notes",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("NOTES_DB", BASE_DIR / "db.sqlite3"),
        # A file, not memory, under tests too: the worker's threads open their own
        # connections, and must see what the test committed.
        "TEST": {"NAME": os.environ.get("NOTES_TEST_DB")},
    }
}

TASKS = {
    "default": {
        "BACKEND": "conveyor.django.ConveyorBackend",
        "QUEUES": ["default", "reports"],
        "OPTIONS": {
            "NAMESPACE": os.environ.get("EXAMPLE_NAMESPACE", "notesite"),
            "RETRIES": 2,
            "TIMEOUT": 60,
        },
    }
}
