"""The review pages: Jinja2 + HTMX over the same services as the JSON API (sessions and CSRF
are app.auth's, shared with the API)."""
