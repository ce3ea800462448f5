# shellcheck shell=bash
# Install steps shared by scripts/test.sh and scripts/run.sh. Source it; do not run it.
#
#   marrow_install_system PKG...   apt-get install the Debian packages that are missing
#   marrow_install_python          create/refresh .venv and `pip install -e '.[test,teacher,quantize]'`
#                                  at the versions in constraints.txt
#
# Both are idempotent and quiet when there is nothing to do. Nothing here starts a service.
# Environment knobs:
#   MARROW_SKIP_INSTALL=1   skip both steps (use the .venv as it is)
#   MARROW_PYTHON=/path     the interpreter to build .venv with (default: python3.11)
#   MARROW_UNCONSTRAINED=1  the newest versions pyproject.toml allows, not constraints.txt's
#                           (to try an upgrade; constraints.txt says how to record one)

MARROW_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MARROW_VENV="$MARROW_ROOT/.venv"
MARROW_EXTRAS="test,teacher,quantize"
MARROW_STAMP="$MARROW_VENV/.marrow-install-stamp"
MARROW_CONSTRAINTS="$MARROW_ROOT/constraints.txt"

# Debian packages the test suite needs: real Redis and PostgreSQL for the integration tests,
# Chromium and fonts for the end-to-end tests and their screenshots, the PDF report's CJK font.
MARROW_TEST_PACKAGES=(redis-server postgresql chromium fonts-dejavu-core fonts-liberation2 fonts-wqy-microhei fonts-noto-core)

_marrow_log() { printf '[marrow-install] %s\n' "$*" >&2; }

_marrow_have_pkg() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = "installed" ]
}

marrow_install_system() {
    [ "${MARROW_SKIP_INSTALL:-0}" = 1 ] && return 0
    if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
        _marrow_log "not a Debian system: install $* yourself; tests that need them will be skipped"
        return 0
    fi
    local missing=() pkg
    for pkg in "$@"; do
        _marrow_have_pkg "$pkg" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0

    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            _marrow_log "missing Debian packages: ${missing[*]} (not root, no sudo): tests that need them will be skipped"
            return 0
        fi
    fi
    _marrow_log "apt-get install ${missing[*]}"
    # Keep the packages' maintainer scripts from starting system-wide services (a Redis on
    # 6379, a PostgreSQL "main" cluster on 5432): the tests start their own on free ports.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null && "${sudo[@]}" chmod 755 "$policy" && made_policy=1
    fi
    local rc=0 log
    log="$(mktemp)"
    {
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            -o Dpkg::Use-Pty=0 "${missing[@]}"
    } >"$log" 2>&1 || rc=$?
    [ "$made_policy" = 1 ] && "${sudo[@]}" rm -f "$policy"
    if [ "$rc" -ne 0 ]; then
        tail -n 20 "$log" >&2
        _marrow_log "apt-get failed (exit $rc): tests that need ${missing[*]} will be skipped"
    fi
    rm -f "$log"
    return 0
}

# The interpreter to build the venv with: python3.11, or a python3 that is 3.11.
_marrow_python() {
    local cand
    for cand in "${MARROW_PYTHON:-}" python3.11 python3; do
        [ -n "$cand" ] || continue
        command -v "$cand" >/dev/null 2>&1 || continue
        if "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            command -v "$cand"
            return 0
        fi
    done
    return 1
}

# What the installed venv must match: the dependency list and its versions, the interpreter and
# this checkout.
_marrow_stamp_value() {
    local py="$1"
    {
        sha256sum "$MARROW_ROOT/pyproject.toml" | cut -d' ' -f1
        if [ "${MARROW_UNCONSTRAINED:-0}" = 1 ]; then echo unconstrained; else sha256sum "$MARROW_CONSTRAINTS" | cut -d' ' -f1; fi
        "$py" -c 'import sys; print(sys.version)'
        echo "$MARROW_ROOT [$MARROW_EXTRAS]"
    } | sha256sum | cut -d' ' -f1
}

marrow_install_python() {
    [ "${MARROW_SKIP_INSTALL:-0}" = 1 ] && return 0
    local py
    if ! py="$(_marrow_python)"; then
        _marrow_log "Python 3.11 not found (tried \$MARROW_PYTHON, python3.11, python3)"
        return 1
    fi
    # Debian's own python3.11 needs python3.11-venv for `-m venv` to bring pip.
    if ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
        marrow_install_system python3.11-venv
    fi
    # A venv whose interpreter is gone or is not 3.11 is rebuilt.
    if [ -d "$MARROW_VENV" ] && ! "$MARROW_VENV/bin/python" -c \
            'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
        _marrow_log "rebuilding $MARROW_VENV (its interpreter is missing or not Python 3.11)"
        rm -rf "$MARROW_VENV"
    fi
    if [ ! -x "$MARROW_VENV/bin/python" ]; then
        _marrow_log "creating $MARROW_VENV with $py"
        "$py" -m venv "$MARROW_VENV" || return 1
    fi
    local want
    want="$(_marrow_stamp_value "$MARROW_VENV/bin/python")"
    if [ -f "$MARROW_STAMP" ] && [ "$(cat "$MARROW_STAMP")" = "$want" ] && [ -x "$MARROW_VENV/bin/marrow" ]; then
        return 0  # pyproject.toml and constraints.txt unchanged since the last install
    fi
    local constraints=()
    if [ "${MARROW_UNCONSTRAINED:-0}" != 1 ]; then constraints=(-c "$MARROW_CONSTRAINTS"); fi
    _marrow_log "pip install -e '.[$MARROW_EXTRAS]' ${constraints[*]:-(unconstrained)} into .venv (the first install of torch takes several minutes)"
    local start=$SECONDS log
    log="$(mktemp)"
    rm -f "$MARROW_STAMP"  # an interrupted install must not pass for a finished one
    if ! (cd "$MARROW_ROOT" && "$MARROW_VENV/bin/python" -m pip install -q --disable-pip-version-check \
            "${constraints[@]}" -e ".[$MARROW_EXTRAS]") >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        rm -f "$log"
        _marrow_log "pip install failed"
        return 1
    fi
    # pip's own warnings, less its notices and this machine's "find-links location ignored" noise.
    grep -v -i -E "^\s*$|notice|^WARNING: Location '.*' is ignored" "$log" >&2 || true
    rm -f "$log"
    echo "$want" >"$MARROW_STAMP"
    _marrow_log "installed in $((SECONDS - start)) s"
}
