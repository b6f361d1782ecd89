"""Turn backend failures and AIM errors into in-page messages instead of tracebacks."""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Iterator

import psycopg
import psycopg_pool
import redis
import streamlit as st

from aim.errors import AIMError, BackendUnavailable, ValidationError

logger = logging.getLogger(__name__)

DATABASE_DOWN_MESSAGE = (
    "PostgreSQL is unreachable, so this page cannot load its data right now. "
    "The page recovers on the next refresh once the database is back."
)
REDIS_DOWN_MESSAGE = (
    "Redis is unreachable and this view needs it. The page recovers on the next refresh once Redis is back."
)


def error_message(exc: AIMError) -> str:
    """Return the text shown for an AIM error. A ValidationError names the field first."""
    if isinstance(exc, ValidationError):
        return f"Invalid {exc.field}: {exc.message}"
    return str(exc)


@contextlib.contextmanager
def page_guard(context: str = "page") -> Iterator[None]:
    """Run a page body and show a message in place of a traceback for expected failures.

    - PostgreSQL down (psycopg.OperationalError, psycopg_pool.PoolTimeout, BackendUnavailable):
      `st.error(DATABASE_DOWN_MESSAGE)`.
    - Redis down on a path without a PostgreSQL fallback (redis.ConnectionError, redis.TimeoutError):
      `st.error(REDIS_DOWN_MESSAGE)`.
    - Any other AIMError: `st.error` with the error's message (ValidationError names the field).

    Streamlit's own control-flow exceptions (st.stop, st.rerun) and programming errors pass through.
    `context` names the page or panel in the log line.
    """
    try:
        yield
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout, BackendUnavailable) as exc:
        incident = uuid.uuid4().hex[:12]
        logger.error("%s: PostgreSQL unreachable (incident %s): %s", context, incident, exc)
        st.error(f"{DATABASE_DOWN_MESSAGE} (incident {incident})", icon=":material/cloud_off:")
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        incident = uuid.uuid4().hex[:12]
        logger.error("%s: Redis unreachable (incident %s): %s", context, incident, exc)
        st.error(f"{REDIS_DOWN_MESSAGE} (incident {incident})", icon=":material/cloud_off:")
    except AIMError as exc:
        logger.info("%s: %s: %s", context, type(exc).__name__, exc)
        st.error(error_message(exc), icon=":material/error:")
