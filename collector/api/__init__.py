"""The HTTP API and the live web console (issue 15; docs/api.md).

* :mod:`collector.api.config`: ``[http]`` and ``[[user]]``, validated;
* :mod:`collector.api.auth`: tokens, roles, site scopes, stream tickets, :func:`require`;
* :mod:`collector.api.app`: the Starlette application (routes, errors, security headers);
* :mod:`collector.api.stream`: Server-Sent Events, bounded per client, never slowing the writer;
* :mod:`collector.api.openapi`: the OpenAPI document, built in code;
* :mod:`collector.api.server`: uvicorn in the collector (a task of ``run`` or a thread);
* ``console/``: the browser console (static HTML, CSS, JavaScript).

Starlette and uvicorn are the ``collector`` extra: nothing here is imported unless ``[http]``
is configured (``collector.app`` imports the server lazily).
"""
