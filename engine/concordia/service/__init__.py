"""``concordia serve``: the HTTP API (runs, signed CloudEvents, sagas, health, metrics) and
the web page, as an ASGI app over one :class:`~concordia.runtime.aengine.AsyncEngine`.

Not imported by ``import concordia``: the command line and services that embed the app
import :func:`concordia.service.app.create_app` when they need it.
"""
