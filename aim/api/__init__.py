"""The AIM REST API (FastAPI) under /api/v1, for agents and integrations.

`create_app()` builds the application; `aim.api.server.serve()` runs it under uvicorn.
"""

from aim.api.app import API_PREFIX, create_app

__all__ = ["API_PREFIX", "create_app"]
