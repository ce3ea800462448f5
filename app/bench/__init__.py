"""Measuring code: `marrow bench` (ml), `marrow bench-app` (endtoend), `marrow bench-load` (load).

Outside the request path: nothing in the product imports this package. It sits above the
product (it starts `marrow run/web/worker` as processes, creates users in a throwaway
database) and holds the throwaway Redis/PostgreSQL servers `bench-load` runs on (`servers`),
which the integration tests reuse through tests/support.
"""
