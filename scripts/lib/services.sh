# Services for the scripts that need a real broker and database (scripts/test,
# scripts/bench): installing and starting tansu, starting PostgreSQL, stopping on exit
# what was started. Sourced, not run; the caller sets ROOT (the repository) and
# SCRIPT_NAME (the prefix of every message) first, and `set -euo pipefail`.
#
# Sourcing it installs the EXIT/INT/TERM traps that stop what the script started.
# shellcheck shell=bash

readonly TANSU_VERSION=0.6.0
readonly CACHE="${MES_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mes-bridge}"
readonly TANSU_ROOT="$CACHE/tansu-$TANSU_VERSION"
readonly TANSU="$TANSU_ROOT/bin/tansu"
# schemathesis (tests/tests/openapi_fuzz.rs): the version pinned in its requirements file.
readonly SCHEMATHESIS_REQUIREMENTS="$ROOT/scripts/lib/schemathesis-requirements.txt"
SCHEMATHESIS_VERSION=$(sed -n 's/^schemathesis==\([^[:space:]]*\).*/\1/p' "$SCHEMATHESIS_REQUIREMENTS")
readonly SCHEMATHESIS_VERSION
readonly SCHEMATHESIS_ROOT="$CACHE/schemathesis-$SCHEMATHESIS_VERSION"
readonly SCHEMATHESIS="$SCHEMATHESIS_ROOT/bin/schemathesis"
readonly SERVICES="$ROOT/target/test-services"
readonly TANSU_LOG="$SERVICES/tansu.log"
readonly PG_HOST=127.0.0.1 PG_PORT=5432
readonly STARTUP_TIMEOUT=${MES_TEST_STARTUP_TIMEOUT:-60}

say() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

tansu_pid=""
started_postgres=""
child_pid=""
child_name=""

# Stops what this run started. Runs once, on any exit: success, test failure, error,
# Ctrl-C or kill (the INT/TERM traps exit, which lands here).
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -n $child_pid ]] && kill -0 "$child_pid" 2>/dev/null; then
        say "stopping $child_name (pid $child_pid)"
        # cargo test does not stop its test binary when it is stopped itself.
        pkill -TERM -P "$child_pid" 2>/dev/null || true
        kill -TERM "$child_pid" 2>/dev/null || true
        wait "$child_pid" 2>/dev/null || true
    fi
    if [[ -n $tansu_pid ]] && kill -0 "$tansu_pid" 2>/dev/null; then
        say "stopping tansu (pid $tansu_pid)"
        kill -TERM "$tansu_pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$tansu_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$tansu_pid" 2>/dev/null; then
            say "tansu did not stop within 5s; killing it"
            kill -KILL "$tansu_pid" 2>/dev/null || true
        fi
        wait "$tansu_pid" 2>/dev/null || true
    fi
    if [[ -n $started_postgres ]]; then
        say "stopping PostgreSQL $started_postgres (this run started it)"
        pg_ctlcluster --skip-systemctl-redirect "$started_postgres" main stop ||
            say "could not stop PostgreSQL $started_postgres"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs "$@" in the background and waits for it, so that a signal to this script is
# handled at once (bash defers traps while a foreground command runs) and cleanup can
# stop the command too.
run_child() {
    child_name="$1 $2"
    "$@" &
    child_pid=$!
    local status=0
    wait "$child_pid" || status=$?
    child_pid=""
    return "$status"
}

port_is_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# Installs tansu into the cache unless it is there. The lock makes a second, concurrent
# run wait for the first one's install instead of building it again.
ensure_tansu() {
    if [[ -x $TANSU ]]; then
        say "using tansu $TANSU_VERSION from the cache ($TANSU)"
        return
    fi
    command -v flock >/dev/null || die "flock (util-linux) is needed to install tansu safely"
    mkdir -p "$CACHE"
    local lock="$CACHE/tansu-$TANSU_VERSION.lock"
    exec 9>"$lock"
    if ! flock -n 9; then
        say "waiting for another run that is installing tansu $TANSU_VERSION (lock: $lock)"
        flock 9
    fi
    if [[ ! -x $TANSU ]]; then
        say "installing tansu $TANSU_VERSION (Kafka-protocol broker for the tests; ~10 min, once) into $TANSU_ROOT"
        run_child cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore \
            --root "$TANSU_ROOT" ||
            die "installing tansu failed (see the cargo output above)"
    fi
    exec 9>&-
}

# Installs schemathesis (the pinned version) into a virtualenv in the cache unless it is
# there; the lock works as ensure_tansu's. Needs python3 with venv and pip (PyPI reachable
# the first time). A marker file written last tells a finished install from one that was
# interrupted, which is removed and done again.
ensure_schemathesis() {
    [[ -n $SCHEMATHESIS_VERSION ]] || die "no schemathesis==VERSION line in $SCHEMATHESIS_REQUIREMENTS"
    local done_marker="$SCHEMATHESIS_ROOT/.installed"
    if [[ -f $done_marker && -x $SCHEMATHESIS ]]; then
        say "using schemathesis $SCHEMATHESIS_VERSION from the cache ($SCHEMATHESIS)"
        return
    fi
    command -v flock >/dev/null || die "flock (util-linux) is needed to install schemathesis safely"
    command -v python3 >/dev/null || die "python3 (with venv and pip) is needed for the OpenAPI fuzz test"
    mkdir -p "$CACHE"
    local lock="$CACHE/schemathesis-$SCHEMATHESIS_VERSION.lock"
    exec 8>"$lock"
    if ! flock -n 8; then
        say "waiting for another run that is installing schemathesis $SCHEMATHESIS_VERSION (lock: $lock)"
        flock 8
    fi
    if [[ ! -f $done_marker ]]; then
        say "installing schemathesis $SCHEMATHESIS_VERSION (OpenAPI fuzzer for the tests; once) into $SCHEMATHESIS_ROOT"
        rm -rf "$SCHEMATHESIS_ROOT"
        python3 -m venv "$SCHEMATHESIS_ROOT" ||
            die "python3 -m venv failed (Debian: apt-get install python3-venv)"
        if ! run_child "$SCHEMATHESIS_ROOT/bin/pip" install --quiet --disable-pip-version-check \
            -r "$SCHEMATHESIS_REQUIREMENTS"; then
            rm -rf "$SCHEMATHESIS_ROOT"
            die "installing schemathesis failed (see the pip output above)"
        fi
        touch "$done_marker"
    fi
    exec 8>&-
}

# Starts tansu on a free loopback port, retrying with another port if it loses the race
# for the one it was given. Sets tansu_pid and MES_TEST_KAFKA_BROKERS.
start_tansu() {
    mkdir -p "$SERVICES"
    local attempt port
    for attempt in 1 2 3; do
        port=$((20000 + RANDOM % 40000))
        port_is_open "$PG_HOST" "$port" && continue
        say "starting tansu on 127.0.0.1:$port (real Kafka-protocol broker, in-memory storage; log: ${TANSU_LOG#"$ROOT"/})"
        # Runs from its own directory (tansu reads a .env file from its working directory)
        # with the settings that matter given explicitly; the environment may hold others.
        (
            cd "$SERVICES" &&
                exec env -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT \
                    RUST_LOG="${MES_TEST_TANSU_LOG:-warn}" \
                    "$TANSU" broker \
                    --cluster-id mes-bridge-test \
                    --listener-url "tcp://127.0.0.1:$port" \
                    --advertised-listener-url "tcp://127.0.0.1:$port" \
                    --storage-engine memory://tansu/
        ) >"$TANSU_LOG" 2>&1 </dev/null &
        tansu_pid=$!
        local waited=0
        while ! port_is_open 127.0.0.1 "$port"; do
            if ! kill -0 "$tansu_pid" 2>/dev/null; then
                say "tansu exited during start-up (attempt $attempt); last lines of $TANSU_LOG:"
                tail -n 20 "$TANSU_LOG" >&2
                tansu_pid=""
                continue 2
            fi
            if ((waited >= STARTUP_TIMEOUT * 10)); then
                say "tansu did not accept connections on 127.0.0.1:$port within ${STARTUP_TIMEOUT}s; last lines of $TANSU_LOG:"
                tail -n 20 "$TANSU_LOG" >&2
                die "tansu did not start"
            fi
            sleep 0.1
            waited=$((waited + 1))
        done
        export MES_TEST_KAFKA_BROKERS="127.0.0.1:$port"
        # The backlog benchmark reads the broker's CPU time from /proc/<pid>/stat.
        export MES_TEST_TANSU_PID="$tansu_pid"
        say "tansu is up (pid $tansu_pid, after $((waited / 10)).$((waited % 10))s)"
        return
    done
    die "could not start tansu (3 attempts); see $TANSU_LOG"
}

# Starts the local PostgreSQL cluster unless it is up; remembers that it did, so that
# cleanup stops it again (and only then).
ensure_postgres() {
    if pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null; then
        say "PostgreSQL is running on $PG_HOST:$PG_PORT; using it"
        return
    fi
    command -v pg_ctlcluster >/dev/null && [[ -d /etc/postgresql ]] ||
        die "PostgreSQL is not running on $PG_HOST:$PG_PORT and no local cluster (pg_ctlcluster, /etc/postgresql) was found;
    install PostgreSQL (Debian/Ubuntu: apt-get install postgresql) or set MES_TEST_DATABASE_URL"
    local version
    # shellcheck disable=SC2012 # version directories are plain names like "15"
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    [[ -n $version ]] || die "no PostgreSQL cluster under /etc/postgresql"
    say "starting PostgreSQL $version (the tests' real database; stopped again afterwards)"
    if pg_ctlcluster --skip-systemctl-redirect "$version" main start; then
        started_postgres=$version
    fi
    local waited=0
    until pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; do
        ((waited < STARTUP_TIMEOUT * 10)) ||
            die "PostgreSQL did not accept connections on $PG_HOST:$PG_PORT within ${STARTUP_TIMEOUT}s (logs: /var/log/postgresql/)"
        sleep 0.1
        waited=$((waited + 1))
    done
}
