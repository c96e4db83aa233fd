"""The HTTP API and live dashboard: `create_app(station)` for any ASGI server, `serve(station)` to run it."""

from stationd.api.app import create_app, serve

__all__ = ["create_app", "serve"]
