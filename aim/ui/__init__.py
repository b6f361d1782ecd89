"""Streamlit building blocks shared by the dashboard pages.

This is the only package under `aim/` that imports Streamlit. Pages call `aim.ui.auth.require_page`
first, read data through `aim.services`, and wrap their bodies in `aim.ui.errors.page_guard()`.
"""
