"""``lesiondb serve``: review in the browser — patients, timelines, lesion crops, the review queue.

- :func:`create_app` — the Starlette application over an engine (:mod:`lesiondb.web.app`);
- :func:`serve` — run it with uvicorn (what the CLI command calls);
- :mod:`lesiondb.web.pages` — what each page shows, as library functions over the graph;
- :mod:`lesiondb.web.crops` / :mod:`lesiondb.web.images` — crops of CT slices, found by pseudonym.

This package owns the web dependencies (Starlette, uvicorn, Jinja2); nothing else imports it.
"""
from .app import create_app
from .server import serve

__all__ = ["create_app", "serve"]
