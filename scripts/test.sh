#!/usr/bin/env bash
# THE test command: installs what the tests need, then runs the whole pytest suite.
#
#   bash scripts/test.sh [PYTEST ARGS...]     e.g.  bash scripts/test.sh -x -k upload
#
# 1. apt-get installs the Debian packages the tests use, only those missing (Redis, PostgreSQL,
#    Chromium, fonts); it starts no service: the tests start their own servers on free ports.
# 2. creates/refreshes .venv (python3.11) with `pip install -e '.[test,teacher,quantize]'`, skipped while
#    pyproject.toml is unchanged since the last install (stamp in .venv).
# 3. runs pytest over tests/ with the given arguments; "no tests collected" counts as a failure.
# MARROW_SKIP_INSTALL=1 skips steps 1-2. Real cells: ../shared/data/bone-marrow-7, or
# MARROW_TEST_DATA=DIR, or --data-dir DIR.
set -uo pipefail

# shellcheck source=scripts/_install.sh
source "$(dirname "${BASH_SOURCE[0]}")/_install.sh"
cd "$MARROW_ROOT" || exit 1

start=$SECONDS
marrow_install_system "${MARROW_TEST_PACKAGES[@]}"
if ! marrow_install_python; then
    echo "scripts/test.sh: FAILED: could not install the Python environment"
    exit 1
fi
install_s=$((SECONDS - start))

# What the integration and end-to-end tests will find (they skip, saying why, without it).
_version() {  # _version CMD ARGS... -> "1.2.3", or "absent"
    local v=""
    command -v "$1" >/dev/null 2>&1 && v="$("$@" 2>/dev/null | grep -o -E '[0-9]+(\.[0-9]+)+' | head -n1)"
    echo "${v:-absent}"
}
pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
echo "scripts/test.sh: python $(_version "$MARROW_VENV/bin/python" --version)," \
     "redis-server $(_version redis-server --version), postgres $(_version "${pg_bin:-/nonexistent}/postgres" --version)," \
     "chromium $(_version chromium --version)"

report="$(mktemp -t marrow-junit.XXXXXX.xml)"
trap 'rm -f "$report"' EXIT
export PYTHONUNBUFFERED=1
"$MARROW_VENV/bin/python" -m pytest -ra --junitxml="$report" "$@"
rc=$?
test_s=$((SECONDS - start - install_s))

# Counts from the JUnit report, for one closing line that any reader understands.
counts="$("$MARROW_VENV/bin/python" - "$report" <<'PY' 2>/dev/null
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
print(f"{passed} passed, {n['failures'] + n['errors']} failed, {n['skipped']} skipped")
PY
)"

timing="install ${install_s}s, pytest ${test_s}s"
case "$rc" in
    0) echo "scripts/test.sh: PASSED ($timing)" ;;
    5) echo "scripts/test.sh: FAILED: pytest collected no tests (exit 5) ($timing)"
       rc=1 ;;
    *) echo "scripts/test.sh: FAILED: pytest exit $rc ($timing)" ;;
esac
# Last line: the counts, in the plain "N passed, N failed" form.
[ -n "$counts" ] && echo "tests: $counts"
exit "$rc"
