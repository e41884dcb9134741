"""Issue 12's seed app: documents through extract -> analyze -> summarize -> embed behind a
FastAPI endpoint, the summary streamed to the browser over Server-Sent Events.

``tasks.py`` holds the four stage tasks (one queue each), ``app.py`` the API, and
``python -m examples.ai_pipeline`` runs it all end to end (see README.md here).
"""
