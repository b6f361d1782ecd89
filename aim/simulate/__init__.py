"""Traffic simulator that drives AIM's real code paths, so the dashboard shows real activity.

`aim simulate` (see `aim.simulate.commands`) sets up an organization with agents and MCP servers
(`population`), then sends live signed traffic through the services (`live`, `target`) or writes
past history in bulk (`backfill`). Both modes draw their actions from one model (`scenario`).
"""
