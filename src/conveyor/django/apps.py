"""The Django app that carries ``manage.py conveyor_worker``."""

from __future__ import annotations

from django.apps import AppConfig


class ConveyorConfig(AppConfig):
    name = "conveyor.django"
    label = "conveyor"
    verbose_name = "Conveyor"
