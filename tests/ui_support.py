"""Helpers shared by the Streamlit AppTest modules: the app path, test users and navigation mode."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from aim.services import organizations, users
from aim.services.actor import system

REPO_ROOT = Path(__file__).resolve().parent.parent
APP = str(REPO_ROOT / "app.py")
PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def navigation_mode(monkeypatch):
    """Run AppTest in st.navigation mode, as a server process is once app.py has run (see test_ui_shell)."""
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


def make_user(db, org_id, role: str, password: str = PASSWORD) -> dict:
    """Create a user of `role` with a unique email; return its row with `organization_name` added."""
    row = users.create_user(db, org_id, system("test"), email=f"{role}-{uuid.uuid4().hex[:8]}@example.com",
                            password=password, role=role)
    return {**row, "organization_name": organizations.get(db, org_id)["name"]}
