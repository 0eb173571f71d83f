#!/usr/bin/env bash
# Install the DevMesh node shipper on a Debian/Ubuntu node (systemd, Python >= 3.11).
#
#   sudo deploy/install_shipper.sh --server http://devmesh.lan:8770 --token-file ./node1.token
#   echo "$TOKEN" | sudo deploy/install_shipper.sh --server https://devmesh.example --token-stdin
#
# What it does (each step is idempotent; re-running upgrades the code, keeps the config):
#   1. apt-get installs python3 and python3-venv if they are missing;
#   2. makes a venv in PREFIX (/opt/devmesh-shipper) with the DevMesh code (no dependencies:
#      the full package pulls in torch) plus the shipper's own few (orjson, PyYAML, structlog,
#      typer);
#   3. writes /etc/devmesh/shipper.yaml and shipper-filters.yaml unless they exist (--force
#      rewrites the config), and the token to /etc/devmesh/shipper.token (root, 0600);
#   4. installs /etc/systemd/system/devmesh-shipper.service, enables and starts it.
#
# Options:
#   --server URL        DevMesh API URL (required unless the config already exists)
#   --token-file FILE   read the API token from FILE   | --token-stdin  read it from stdin
#                       (a token is never taken as an argument: it would show in ps/history)
#   --source DIR        DevMesh source tree or wheel to install (default: this script's repo)
#   --prefix DIR        install prefix (default /opt/devmesh-shipper)
#   --start head|tail   first run without a cursor: whole journal or new entries (default tail)
#   --format export|json  journalctl output format (default export)
#   --force             overwrite an existing shipper.yaml
#   --no-start          install but do not enable/start the service
#   --agent             also install devmesh-agent.service (runs approved remediation for
#                       this node; what it may touch is /etc/devmesh/actions.yaml, empty at first)
#   --skip-venv         do not create the venv (files only; for packaging and tests)
#   --destdir DIR       install under DIR (staging/packaging): no apt, no systemctl, no root
#   --dry-run           print what would be done, change nothing
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SOURCE="$(dirname "$SCRIPT_DIR")"
PREFIX=/opt/devmesh-shipper
CONFIG_DIR=/etc/devmesh
UNIT_DIR=/etc/systemd/system
SERVER=""
TOKEN_FILE=""
TOKEN_STDIN=0
START=tail
AGENT=0
FORMAT=export
FORCE=0
NO_START=0
SKIP_VENV=0
DESTDIR=""
DRY_RUN=0
# pydantic: the node agent validates actions against its own allowlist with the catalog.
PYTHON_DEPS=("orjson>=3.9" "PyYAML>=6.0" "structlog>=24.1" "typer>=0.12" "pydantic>=2.7")

die() { echo "install_shipper: error: $*" >&2; exit 1; }
say() { echo "install_shipper: $*"; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }

# run CMD...: execute, or only print it with --dry-run.
run() {
    if [ "$DRY_RUN" = 1 ]; then
        printf 'would run:'; printf ' %q' "$@"; printf '\n'
    else
        "$@"
    fi
}

while [ $# -gt 0 ]; do
    case "$1" in
        --server) SERVER="${2:?--server needs a URL}"; shift 2 ;;
        --token-file) TOKEN_FILE="${2:?--token-file needs a path}"; shift 2 ;;
        --token-stdin) TOKEN_STDIN=1; shift ;;
        --source) SOURCE="${2:?--source needs a path}"; shift 2 ;;
        --prefix) PREFIX="${2:?--prefix needs a path}"; shift 2 ;;
        --start) START="${2:?--start needs head or tail}"; shift 2 ;;
        --format) FORMAT="${2:?--format needs json or export}"; shift 2 ;;
        --force) FORCE=1; shift ;;
        --no-start) NO_START=1; shift ;;
        --agent) AGENT=1; shift ;;
        --skip-venv) SKIP_VENV=1; shift ;;
        --destdir) DESTDIR="${2:?--destdir needs a path}"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "install_shipper: unknown option: $1" >&2; usage 2 ;;
    esac
done

case "$START" in head|tail) ;; *) die "--start must be head or tail" ;; esac
case "$FORMAT" in json|export) ;; *) die "--format must be json or export" ;; esac
if [ -n "$SERVER" ]; then
    case "$SERVER" in
        http://*|https://*) ;;
        *) die "--server must be an http:// or https:// URL" ;;
    esac
    case "$SERVER" in *[[:space:]\"\'\\]*) die "--server contains spaces or quotes" ;; esac
fi
[ -n "$TOKEN_FILE" ] && [ "$TOKEN_STDIN" = 1 ] && die "use --token-file or --token-stdin, not both"

# Paths as installed (what the unit and config refer to) and as written (under DESTDIR).
ETC="$DESTDIR$CONFIG_DIR"
UNIT_PATH="$DESTDIR$UNIT_DIR/devmesh-shipper.service"
CONFIG_PATH="$ETC/shipper.yaml"
FILTERS_PATH="$ETC/shipper-filters.yaml"
TOKEN_PATH="$ETC/shipper.token"
VENV="$DESTDIR$PREFIX/venv"

if [ -z "$DESTDIR" ] && [ "$DRY_RUN" = 0 ]; then
    [ "$(id -u)" = 0 ] || die "run as root (or use --destdir DIR / --dry-run)"
    [ -d /run/systemd/system ] || say "warning: systemd does not seem to be running here"
    [ -r /etc/debian_version ] || say "warning: not Debian/Ubuntu; apt steps may fail"
fi

# -- the token: read before anything else so a mistake changes nothing -----------------------
TOKEN=""
if [ -n "$TOKEN_FILE" ]; then
    [ -r "$TOKEN_FILE" ] || die "cannot read token file $TOKEN_FILE"
    TOKEN="$(grep -m1 -v '^[[:space:]]*$' "$TOKEN_FILE" | tr -d '[:space:]' || true)"
    [ -n "$TOKEN" ] || die "token file $TOKEN_FILE is empty"
elif [ "$TOKEN_STDIN" = 1 ]; then
    IFS= read -r TOKEN || true
    TOKEN="$(printf '%s' "$TOKEN" | tr -d '[:space:]')"
    [ -n "$TOKEN" ] || die "no token on stdin"
elif [ ! -e "$TOKEN_PATH" ]; then
    die "no token: pass --token-file FILE or --token-stdin (make one on the server with: devmesh token create $(hostname) --host $(hostname))"
fi
if [ ! -e "$CONFIG_PATH" ] || [ "$FORCE" = 1 ]; then
    [ -n "$SERVER" ] || die "--server is required for a new config"
fi

# -- 1. system packages ------------------------------------------------------------------------
if [ -z "$DESTDIR" ] && [ "$SKIP_VENV" = 0 ]; then
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        run apt-get update
        run env DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-venv
    fi
    if [ "$DRY_RUN" = 0 ]; then
        python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
            || die "Python >= 3.11 is required (this node has $(python3 -V 2>&1))"
    fi
    command -v journalctl >/dev/null 2>&1 || die "journalctl not found (is this a systemd node?)"
fi

# -- 2. code -----------------------------------------------------------------------------------
if [ "$SKIP_VENV" = 0 ]; then
    [ -e "$SOURCE" ] || die "source $SOURCE does not exist"
    run mkdir -p "$DESTDIR$PREFIX"
    [ -x "$VENV/bin/python" ] || run python3 -m venv "$VENV"
    run "$VENV/bin/pip" install --quiet --upgrade pip
    run "$VENV/bin/pip" install --quiet "${PYTHON_DEPS[@]}"
    # --no-deps: the package's full dependency list (torch, FastAPI…) is for the server.
    run "$VENV/bin/pip" install --quiet --no-deps --upgrade "$SOURCE"
    if [ "$DRY_RUN" = 0 ]; then
        "$VENV/bin/python" -m devmesh.cli.ship --help >/dev/null \
            || die "the installed shipper does not start; see the error above"
    fi
fi

# -- 3. configuration ---------------------------------------------------------------------------
run install -d -m 0755 "$ETC"
if [ ! -e "$CONFIG_PATH" ] || [ "$FORCE" = 1 ]; then
    say "writing $CONFIG_PATH"
    if [ "$DRY_RUN" = 0 ]; then
        tmp="$(mktemp "$ETC/.shipper.yaml.XXXXXX")"
        sed -e "s|^server: .*|server: $SERVER|" \
            -e "s|^  start: .*|  start: $START|" \
            -e "s|^  format: .*|  format: $FORMAT|" \
            -e "s|^token_file: .*|token_file: $CONFIG_DIR/shipper.token|" \
            -e "s|^filters_file: .*|filters_file: $CONFIG_DIR/shipper-filters.yaml|" \
            "$SCRIPT_DIR/shipper.example.yaml" > "$tmp"
        chmod 0644 "$tmp"
        mv -f "$tmp" "$CONFIG_PATH"
    fi
else
    say "keeping existing $CONFIG_PATH (use --force to rewrite it)"
fi
if [ ! -e "$FILTERS_PATH" ]; then
    run install -m 0644 "$SCRIPT_DIR/shipper-filters.example.yaml" "$FILTERS_PATH"
fi
if [ -n "$TOKEN" ]; then
    say "writing $TOKEN_PATH (mode 0600)"
    if [ "$DRY_RUN" = 0 ]; then
        # umask first: the token is never readable by others, not even for an instant.
        (umask 077 && printf '%s\n' "$TOKEN" > "$TOKEN_PATH.tmp" && mv -f "$TOKEN_PATH.tmp" "$TOKEN_PATH")
        chmod 0600 "$TOKEN_PATH"
    fi
fi

# -- 4. systemd unit ----------------------------------------------------------------------------
run install -d -m 0755 "$DESTDIR$UNIT_DIR"
say "writing $UNIT_PATH"
if [ "$DRY_RUN" = 0 ]; then
    sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@CONFIG_DIR@|$CONFIG_DIR|g" \
        "$SCRIPT_DIR/devmesh-shipper.service" > "$UNIT_PATH.tmp"
    chmod 0644 "$UNIT_PATH.tmp"
    mv -f "$UNIT_PATH.tmp" "$UNIT_PATH"
fi

if [ "$AGENT" = 1 ]; then
    AGENT_UNIT_PATH="$DESTDIR$UNIT_DIR/devmesh-agent.service"
    AGENT_ENV="$ETC/agent.env"
    ACTIONS_PATH="$ETC/actions.yaml"
    say "writing $AGENT_UNIT_PATH and $AGENT_ENV"
    if [ "$DRY_RUN" = 0 ]; then
        sed -e "s|/opt/devmesh-shipper|$PREFIX|g" -e "s|/etc/devmesh|$CONFIG_DIR|g" \
            "$SCRIPT_DIR/systemd/devmesh-agent.service" > "$AGENT_UNIT_PATH.tmp"
        chmod 0644 "$AGENT_UNIT_PATH.tmp"
        mv -f "$AGENT_UNIT_PATH.tmp" "$AGENT_UNIT_PATH"
        agent_server="$SERVER"
        [ -n "$agent_server" ] || agent_server="$(sed -n 's/^server: *//p' "$CONFIG_PATH")"
        printf 'DEVMESH_AGENT_SERVER=%s\nDEVMESH_AGENT_HOST=%s\n' "$agent_server" "$(hostname)" \
            > "$AGENT_ENV"
        chmod 0644 "$AGENT_ENV"
        if [ ! -e "$ACTIONS_PATH" ]; then
            # Nothing is allowed until the operator lists it (see ActionSettings).
            printf '%s\n' "# What the agent may touch on this node, e.g.:" \
                "# allow: {\"$(hostname)\": {units: [nginx], containers: [jellyfin]}}" \
                "allow: {}" > "$ACTIONS_PATH"
            chmod 0644 "$ACTIONS_PATH"
        fi
    fi
fi

if [ -z "$DESTDIR" ]; then
    run systemctl daemon-reload
    if [ "$AGENT" = 1 ] && [ "$NO_START" = 0 ]; then
        run systemctl enable devmesh-agent.service
        run systemctl restart devmesh-agent.service
    fi
    if [ "$NO_START" = 0 ]; then
        run systemctl enable devmesh-shipper.service
        # restart, not start: a re-run picks up new code and config.
        run systemctl restart devmesh-shipper.service
        say "started; follow it with: journalctl -u devmesh-shipper -f"
    else
        say "installed; start it with: systemctl enable --now devmesh-shipper"
    fi
fi
say "done"
