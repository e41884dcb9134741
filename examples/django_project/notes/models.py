from django.db import models


class Note(models.Model):
    text = models.TextField()
    summary = models.CharField(max_length=80, blank=True)
    words = models.IntegerField(null=True)
