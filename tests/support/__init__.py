"""What the tests share: throwaway servers, pytest plugins, and reference code (oracles) the
product itself does not need. Importable as `support.*` (pytest puts tests/ on sys.path)."""
