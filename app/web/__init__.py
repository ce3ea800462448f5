"""The review pages: Jinja2 + HTMX over the same services as the JSON API.

Kept import-free so app.deps can use app.web.session without pulling in the routes.
"""
