#!/bin/sh
# Entrypoint of the gateway image.
#   no arguments: validate the configuration (gateway check-config), then
#                 exec gateway serve on 0.0.0.0:${GATEWAY_PORT:-8080} with ${GATEWAY_WORKERS}
#                 workers, by default one per CPU this container may use
#   arguments:    exec gateway "$@", e.g. docker compose run --rm gateway report --since 24h
set -eu

# CPUs this container may use: the CPUs it may run on (nproc), capped by its CPU quota
# (compose `cpus:`, docker --cpus), which nproc does not see.
cpu_count() {
    cgroup=${GATEWAY_CGROUP_DIR:-/sys/fs/cgroup}  # tests point this at a fake cgroup
    n=$(nproc 2>/dev/null || echo 1)
    quota=max
    period=100000
    if [ -r "$cgroup/cpu.max" ]; then  # cgroup v2: "<quota> <period>" or "max <period>"
        read -r quota period <"$cgroup/cpu.max"
    elif [ -r "$cgroup/cpu/cpu.cfs_quota_us" ]; then  # cgroup v1: -1 means no quota
        quota=$(cat "$cgroup/cpu/cpu.cfs_quota_us")
        period=$(cat "$cgroup/cpu/cpu.cfs_period_us")
        [ "$quota" -gt 0 ] || quota=max
    fi
    if [ "$quota" != max ]; then
        limit=$(((quota + period - 1) / period))
        [ "$limit" -ge "$n" ] || n=$limit
    fi
    [ "$n" -ge 1 ] || n=1
    echo "$n"
}

# The compose stack keeps the gateway's settings in .env in the working directory; without it
# the gateway would start on its defaults, so there it is required.
if [ "${PIKA_REQUIRE_ENV_FILE:-0}" = 1 ] && [ ! -r .env ]; then
    echo "gateway-entrypoint: no readable .env in $(pwd)" \
        "(compose: ln -s gateway.env env/.env)" >&2
    exit 2
fi

if [ "$#" -gt 0 ]; then
    exec gateway "$@"
fi

# check-config names the variable at fault on stderr. The effective configuration it prints
# goes to /dev/null: it holds the records URL, with its password.
gateway check-config >/dev/null || exit $?

port=${GATEWAY_PORT:-8080}
workers=${GATEWAY_WORKERS:-$(cpu_count)}
echo "gateway-entrypoint: configuration valid; serving on 0.0.0.0:$port with $workers worker(s)" >&2
exec gateway serve --host 0.0.0.0 --port "$port" --workers "$workers"
