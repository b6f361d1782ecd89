"""API routers, one module per resource. `aim.api.app` mounts them under /api/v1."""
