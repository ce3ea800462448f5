"""Who is asking: passwords, API tokens, browser sessions and CSRF, the login rate limit.

One place for the JSON API (app.deps) and the review pages (app.web.auth). It sits beside the
domain packages (it reads app.users.models) and below the web layer; it imports no route.
"""
