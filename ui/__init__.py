"""The review page (`vigil ui`): camera tiles, the alert list, an alert's page, review marks.

* :mod:`ui.config` -- the ``ui`` config section;
* :mod:`ui.live` -- :class:`LiveView`, the latest frame, map and score line of each camera,
  fed from ``vigil.frames`` and ``vigil.scores`` by :class:`LiveFeed`;
* :mod:`ui.health` -- each camera's health (online, reconnecting, offline) from the ingest
  health data;
* :mod:`ui.server` -- the HTTP server: the pages (``ui/static``, no build step) and their
  JSON API, serving the alert store's objects by id only.

It starts without torch (import-linter), like the ingest and alert roles.
"""
