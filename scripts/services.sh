#!/usr/bin/env bash
# Start the servers the test suite needs when they are not already answering:
# PostgreSQL (127.0.0.1:5432, trust auth for root), Redis (6379), RabbitMQ (5672).
# Installs them from Debian's packages when missing. Needs root for that.
set -euo pipefail

reachable() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {  # port name
    for _ in $(seq 1 60); do reachable "$1" && return 0; sleep 1; done
    echo "services: $2 did not come up on port $1" >&2
    return 1
}

apt_updated=
apt_install() {
    if [ -z "$apt_updated" ]; then apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! reachable 5432; then
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        echo "services: installing PostgreSQL"
        apt_install postgresql
        version=$(ls /etc/postgresql)
        # the tests connect as root over TCP without a password, as on the dev machines
        sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' \
            "/etc/postgresql/$version/main/pg_hba.conf"
        fresh_postgres=1
    fi
    echo "services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
    wait_for 5432 PostgreSQL
    if [ -n "${fresh_postgres:-}" ]; then
        su postgres -c "psql -qc 'CREATE ROLE root SUPERUSER LOGIN'" || true
        su postgres -c "createdb -O root test" || true
        su postgres -c "createdb -O root root" || true
    fi
fi

if ! reachable 6379; then
    command -v redis-server >/dev/null || { echo "services: installing Redis"; apt_install redis-server; }
    echo "services: starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_for 6379 Redis
fi

if ! reachable 5672; then
    command -v rabbitmq-server >/dev/null || { echo "services: installing RabbitMQ"; apt_install rabbitmq-server; }
    echo "services: starting RabbitMQ"
    rabbitmq-server -detached
    wait_for 5672 RabbitMQ
fi
echo "services: PostgreSQL, Redis and RabbitMQ are up"
