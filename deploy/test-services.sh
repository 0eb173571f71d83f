#!/usr/bin/env bash
# Start the local services the test suite talks to, if they are installed and not running.
# Idempotent; used by `make test` and `.ci/run`.
set -euo pipefail

# Real journal files for the shipper tests are made by systemd-journal-remote.
if [ ! -x /lib/systemd/systemd-journal-remote ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test-services: installing systemd-journal-remote"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd-journal-remote >/dev/null
fi

mariadb_up() { mysqladmin --protocol=tcp -h127.0.0.1 -uroot ping >/dev/null 2>&1; }

if ! mariadb_up; then
    if [ -x /usr/sbin/mariadbd ]; then
        echo "test-services: starting MariaDB"
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
        for _ in $(seq 1 60); do mariadb_up && break; sleep 1; done
    fi
    mariadb_up || { echo "test-services: MariaDB is not reachable at 127.0.0.1:3306" >&2; exit 1; }
fi

# Headless Chromium and its driver for the status page's browser tests (tests/web).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test-services: installing chromium and chromium-driver"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
