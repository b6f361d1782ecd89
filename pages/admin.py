"""Admin (admin role only): users and roles, API keys, organization settings and risk-class overrides.

URL state: the cursors `users_cursor` and `keys_cursor` with their page numbers.
"""

from aim.ui.auth import require_page

user = require_page("admin")

import logging  # noqa: E402
import uuid  # noqa: E402
from datetime import datetime, time, timezone  # noqa: E402

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from aim.errors import AIMError, ValidationError  # noqa: E402
from aim.runtime import get_runtime  # noqa: E402
from aim.services import api_keys, listing, organizations, users  # noqa: E402
from aim.services import dashboard_queries_shell as queries  # noqa: E402
from aim.services.actor import ROLES  # noqa: E402
from aim.services.risk_classes import DEFAULT_RULES  # noqa: E402
from aim.trust import RISK_CLASSES  # noqa: E402
from aim.ui import components as ui  # noqa: E402
from aim.ui.auth import actor_for  # noqa: E402
from aim.ui.errors import error_message, page_guard  # noqa: E402
from aim.ui.timefmt import format_ts, localize_column  # noqa: E402

logger = logging.getLogger("aim.ui.pages.admin")

PAGE_SIZE = 50
USERS_CURSOR = "users_cursor"
KEYS_CURSOR = "keys_cursor"
NEW_API_KEY_STATE = "admin_new_api_key"
FLASH_STATE = "admin_flash"

tz = st.session_state.get("timezone", "UTC")
organization_id = user["organization_id"]


def flash(message: str, tab: str) -> None:
    """Keep a confirmation for the next run, shown in `tab` (users, keys or organization)."""
    st.session_state[f"{FLASH_STATE}_{tab}"] = message


def show_flash(tab: str) -> None:
    message = st.session_state.pop(f"{FLASH_STATE}_{tab}", None)
    if message:
        st.success(message, icon=":material/check_circle:")


def attempt(action) -> bool:
    """Run a service call and show its AIMError (naming the field for ValidationError)."""
    try:
        action()
    except AIMError as exc:
        st.error(error_message(exc), icon=":material/error:")
        return False
    return True


# --- users -------------------------------------------------------------------------------------------


def render_create_user() -> None:
    with st.expander("Create user", icon=":material/person_add:"):
        with st.form("create_user", border=False):
            email_column, name_column, role_column = st.columns([2, 2, 1])
            email = email_column.text_input("Email", key="create_user_email")
            display_name = name_column.text_input("Display name", key="create_user_name")
            role = role_column.selectbox("Role", ROLES, index=ROLES.index("viewer"), key="create_user_role")
            first, second = st.columns(2)
            password = first.text_input("Password", type="password", key="create_user_password",
                                        help=f"At least {users.MIN_PASSWORD_LENGTH} characters.")
            password_again = second.text_input("Password again", type="password", key="create_user_password_again")
            submitted = st.form_submit_button("Create user", type="primary")
        if submitted:
            def create() -> None:
                if password != password_again:
                    raise ValidationError("password_again", "does not match the password; type the same password twice")
                created = users.create_user(get_runtime().db, organization_id, actor_for(user), email=email,
                                            password=password, role=role, display_name=display_name.strip())
                flash(f"User {created['email']} created with role {created['role']}.", "users")

            if attempt(create):
                st.rerun()


def render_users() -> None:
    show_flash("users")
    render_create_user()
    runtime = get_runtime()
    page = ui.fetch_paged(
        lambda cursor: queries.list_users(runtime.db, organization_id, cursor=cursor, limit=PAGE_SIZE,
                                          secret=runtime.secret_key),
        param=USERS_CURSOR,
    )
    if not page.items:
        ui.empty_state("No users.")
        return
    df = pd.DataFrame(page.items)[["email", "display_name", "role", "is_active", "created_at", "last_login_at"]]
    df["created_at"] = localize_column(df["created_at"], tz)
    df["last_login_at"] = localize_column(df["last_login_at"], tz)
    st.dataframe(df, hide_index=True, placeholder="—", width="stretch", key="users_table", column_config={
        "email": "Email", "display_name": "Name", "role": "Role",
        "is_active": st.column_config.CheckboxColumn("Active"),
        "created_at": st.column_config.DatetimeColumn("Created", format="YYYY-MM-DD HH:mm"),
        "last_login_at": st.column_config.DatetimeColumn("Last sign-in", format="YYYY-MM-DD HH:mm"),
    })
    ui.pager(page, key="users_pager", noun="users", param=USERS_CURSOR)
    render_user_actions(page.items)


def render_user_actions(rows: list[dict]) -> None:
    st.markdown("##### Change a user")
    by_email = {row["email"]: row for row in rows}
    target_column, role_column, role_button, active_button = st.columns([2.2, 1, 1, 1], vertical_alignment="bottom")
    email = target_column.selectbox("User", list(by_email), key="admin_user_select",
                                    help="Users on the page shown above.")
    target = by_email[email]
    new_role = role_column.selectbox("Role", ROLES, index=ROLES.index(target["role"]), key="admin_user_role")
    is_self = target["id"] == user["id"]
    if is_self:
        st.caption("You cannot change your own role or deactivate yourself; another admin can.")
    db = get_runtime().db
    if role_button.button("Change role", key="admin_change_role", disabled=is_self or new_role == target["role"],
                          width="stretch"):
        if attempt(lambda: users.set_role(db, organization_id, target["id"], actor_for(user), new_role)):
            flash(f"{email} is now {new_role}.", "users")
            st.rerun()
    label = "Deactivate" if target["is_active"] else "Activate"
    if active_button.button(label, key="admin_toggle_active", disabled=is_self, width="stretch"):
        if attempt(lambda: users.set_active(db, organization_id, target["id"], actor_for(user),
                                            not target["is_active"])):
            flash(f"{email} {'deactivated; their sessions end at their next request' if target['is_active'] else 'activated'}.", "users")
            st.rerun()


# --- API keys ----------------------------------------------------------------------------------------


def show_new_api_key_once() -> None:
    created = st.session_state.pop(NEW_API_KEY_STATE, None)
    if created is None:
        return
    with st.container(border=True):
        st.markdown(f"#### :material/key: API key {created['name']}")
        st.warning("Copy this key now. AIM stores only its hash, so it is shown only this once.",
                   icon=":material/warning:")
        st.code(created["secret"], language=None)


def render_create_api_key() -> None:
    with st.expander("Create API key", icon=":material/add_circle:"):
        with st.form("create_api_key", border=False):
            name_column, role_column = st.columns([3, 1])
            name = name_column.text_input("Name", key="api_key_name", placeholder="ci-pipeline")
            role = role_column.selectbox("Role", ROLES, index=ROLES.index("analyst"), key="api_key_role")
            agent_column, expiry_column = st.columns([3, 1])
            agent_text = agent_column.text_input("Scope to agent id (optional)", key="api_key_agent",
                                                 help="A key scoped to an agent acts only for that agent.")
            expiry = expiry_column.date_input("Expires (optional)", value=None, key="api_key_expiry",
                                              help="The key stops working at the start of this day, UTC.")
            submitted = st.form_submit_button("Create API key", type="primary")
        if submitted:
            def create() -> None:
                agent_id = None
                if agent_text.strip():
                    try:
                        agent_id = uuid.UUID(agent_text.strip())
                    except ValueError:
                        raise ValidationError("agent_id", f"{agent_text.strip()!r} is not an agent id; expected a UUID") from None
                expires_at = datetime.combine(expiry, time.min, tzinfo=timezone.utc) if expiry else None
                result = api_keys.create_api_key(get_runtime().db, organization_id, actor_for(user), name=name,
                                                 role=role, agent_id=agent_id, expires_at=expires_at)
                st.session_state[NEW_API_KEY_STATE] = {"name": result.api_key["name"], "secret": result.secret}
                flash(f"API key {result.api_key['name']} ({result.api_key['prefix']}…) created.", "keys")

            if attempt(create):
                st.rerun()


def render_api_keys() -> None:
    show_flash("keys")
    show_new_api_key_once()
    render_create_api_key()
    runtime = get_runtime()
    page = ui.fetch_paged(
        lambda cursor: listing.list_api_keys(runtime.db, organization_id, cursor=cursor, limit=PAGE_SIZE,
                                             secret=runtime.secret_key),
        param=KEYS_CURSOR,
    )
    if not page.items:
        ui.empty_state("No API keys yet.", icon=":material/key_off:")
        return
    df = pd.DataFrame(page.items)[["name", "prefix", "role", "agent_id", "created_by", "created_at", "last_used_at",
                                   "expires_at", "revoked_at"]]
    df["agent_id"] = df["agent_id"].map(lambda value: str(value) if value else "")
    for column in ("created_at", "last_used_at", "expires_at", "revoked_at"):
        df[column] = localize_column(df[column], tz)
    st.dataframe(df, hide_index=True, placeholder="—", width="stretch", key="api_keys_table", column_config={
        "name": "Name", "prefix": "Prefix", "role": "Role", "agent_id": "Agent", "created_by": "Created by",
        "created_at": st.column_config.DatetimeColumn("Created", format="YYYY-MM-DD HH:mm"),
        "last_used_at": st.column_config.DatetimeColumn("Last used", format="YYYY-MM-DD HH:mm"),
        "expires_at": st.column_config.DatetimeColumn("Expires", format="YYYY-MM-DD HH:mm"),
        "revoked_at": st.column_config.DatetimeColumn("Revoked", format="YYYY-MM-DD HH:mm"),
    })
    ui.pager(page, key="api_keys_pager", noun="API keys", param=KEYS_CURSOR)
    active = {f"{row['name']} ({row['prefix']}…)": row for row in page.items if row["revoked_at"] is None}
    if not active:
        return
    st.markdown("##### Revoke a key")
    key_column, confirm_column, button_column = st.columns([2.2, 1.6, 1], vertical_alignment="bottom")
    label = key_column.selectbox("API key", list(active), key="revoke_api_key_select")
    confirmed = confirm_column.checkbox("Revoke it permanently", key="revoke_api_key_confirm")
    if button_column.button("Revoke key", key="revoke_api_key", type="primary", disabled=not confirmed,
                            width="stretch"):
        target = active[label]
        if attempt(lambda: api_keys.revoke_api_key(runtime.db, organization_id, target["id"], actor_for(user))):
            flash(f"API key {label} revoked.", "keys")
            st.rerun()


# --- organization --------------------------------------------------------------------------------------


def render_organization() -> None:
    show_flash("organization")
    organization = organizations.get(get_runtime().db, organization_id)
    st.markdown(f"**{organization['name']}**  \n:gray[`{organization['id']}` · created "
                f"{format_ts(organization['created_at'], tz)}]")
    st.markdown("##### Risk-class overrides")
    st.caption("Action patterns (shell-style, such as `db:*` or `*:export`) mapped to a risk class. Overrides are "
               "checked top to bottom before the defaults; the first match wins. Thresholds: low 30 %, "
               "medium 50 %, high 70 %, critical 85 %.")
    current = organization["settings"].get("risk_classes") or {}
    editor = st.data_editor(
        # Explicit string dtypes: an empty frame would otherwise be float, which a text column cannot edit.
        pd.DataFrame({"pattern": pd.Series(list(current), dtype="string"),
                      "risk_class": pd.Series(list(current.values()), dtype="string")}),
        num_rows="dynamic", hide_index=True, width="stretch", key="risk_class_editor",
        column_config={
            "pattern": st.column_config.TextColumn("Action pattern", required=True, max_chars=128),
            "risk_class": st.column_config.SelectboxColumn("Risk class", options=list(RISK_CLASSES), required=True),
        },
    )
    if st.button("Save overrides", key="save_risk_classes", type="primary", icon=":material/save:"):
        def save() -> None:
            overrides: dict[str, str] = {}
            for position, row in enumerate(editor.itertuples(index=False), start=1):
                pattern = (row.pattern or "").strip() if isinstance(row.pattern, str) else ""
                if not pattern:
                    raise ValidationError(f"risk_classes row {position}", "has no action pattern; expected text such as db:*")
                if pattern in overrides:
                    raise ValidationError(f"risk_classes.{pattern}", "appears twice; expected each pattern once")
                overrides[pattern] = row.risk_class
            organizations.set_risk_classes(get_runtime().db, organization_id, actor_for(user), overrides)
            flash(f"{len(overrides)} risk-class overrides saved.", "organization")

        if attempt(save):
            st.rerun()
    with st.expander("Default rules"):
        st.dataframe(pd.DataFrame(DEFAULT_RULES, columns=["Action pattern", "Risk class"]), hide_index=True, placeholder="—",
                     width="stretch", key="default_risk_rules")


ui.page_header("Admin", "Users, API keys and organization settings.", ":material/admin_panel_settings:")
with page_guard("admin"):
    users_tab, keys_tab, organization_tab = st.tabs(["Users", "API keys", "Organization"])
    with users_tab:
        render_users()
    with keys_tab:
        render_api_keys()
    with organization_tab:
        render_organization()
