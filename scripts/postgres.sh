#!/usr/bin/env bash
# A private PostgreSQL server for the tests and benchmarks: a cluster of its own, made with initdb
# and run with pg_ctl, listening on 127.0.0.1 only. Debian's system cluster and its service are
# never used or touched. Installs Debian's `postgresql` package with apt when the server binaries
# are missing (as root). Idempotent: a start on a running cluster takes a fraction of a second.
#
#   bash scripts/postgres.sh [start]   # install, create (once), start (unless running), print the URL
#   bash scripts/postgres.sh url       # print the URL only
#   bash scripts/postgres.sh stop      # stop the cluster (fine when it is not running)
#   bash scripts/postgres.sh reset     # stop it and remove its data directory
#   bash scripts/postgres.sh ca        # print the path of the test CA's certificate (made by start)
#
# start and url print one line on stdout, postgres://cockpit:cockpit@127.0.0.1:55432/cockpit;
# everything else goes to stderr. The role `cockpit` (password `cockpit`, CREATEDB: the tests make
# a database each) owns the database `cockpit` and logs in over TCP with a password (SCRAM). The
# superuser `postgres` is trusted on the unix socket only, which lives in the data directory
# (mode 0700: reachable by its owner and root only). The server also speaks TLS, with a
# certificate for 127.0.0.1 and localhost signed by a test CA made once (its certificate, public,
# is copied beside the data directory: `ca`), so that verified TLS connections are tested.
#
#   COCKPIT_PG_PORT=55432                        the port
#   COCKPIT_PG_DIR=/tmp/cockpit-postgres-$port   the data directory; also holds the socket and
#                                                the server's log, postgres.log
#   COCKPIT_PG_FAST=1                            fsync, synchronous_commit and full_page_writes
#                                                off, for test runs (a crash of the machine may
#                                                lose the cluster). Without it they are on: the
#                                                benchmarks compare durable writes. A start gives
#                                                a running cluster the mode it asks for (reload).
#   COCKPIT_PG_WAIT=60                           seconds to wait for the server to accept
#                                                connections
#
# PostgreSQL refuses to run as root: as root, initdb, pg_ctl and psql run as the `postgres` system
# user (runuser), which owns the data directory; otherwise as the current user.
set -euo pipefail
exec 3>&1 1>&2 # stdout carries the URL only

die() {
  echo "scripts/postgres.sh: $*" >&2
  exit 1
}
say() { echo "scripts/postgres.sh: $*" >&2; }

port=${COCKPIT_PG_PORT:-55432}
if ! [[ $port =~ ^[1-9][0-9]{0,4}$ ]] || ((port > 65535)); then die "COCKPIT_PG_PORT=$port is not a port"; fi
dir=${COCKPIT_PG_DIR:-/tmp/cockpit-postgres-$port}
case $dir in /*) ;; *) dir=$PWD/$dir ;; esac
dir=${dir%/}
[ -n "$dir" ] || die "COCKPIT_PG_DIR must not be /"
[[ $dir != *"'"* ]] || die "COCKPIT_PG_DIR must not contain a quote"
log=$dir/postgres.log
wait_secs=${COCKPIT_PG_WAIT:-60}
[[ $wait_secs =~ ^[0-9]+$ ]] || die "COCKPIT_PG_WAIT=$wait_secs is not a number of seconds"
url="postgres://cockpit:cockpit@127.0.0.1:$port/cockpit"
ca=$dir.ca.pem
if [ "${COCKPIT_PG_FAST:-}" = 1 ]; then durability=off; else durability=on; fi
script=$(readlink -f "${BASH_SOURCE[0]}")
root=false
[ "$(id -u)" -ne 0 ] || root=true

# Closes every descriptor above stderr, in a subshell that starts something which may outlive
# this script (the server; the system cluster apt may start): it must not hold the caller's
# stdout (fd 3 here: whoever reads the URL from a pipe would wait for the server to exit) nor the
# lock (fd 9: the next start would wait for ever).
close_fds() {
  local fd
  for fd in /proc/self/fd/*; do
    fd=${fd##*/}
    if [[ $fd =~ ^[0-9]+$ ]] && ((fd > 2)); then eval "exec $fd>&-"; fi
  done
}

# Runs a command as the cluster's owner, from / (root's working directory may be closed to
# `postgres`), with no descriptor but stdin, stdout and stderr.
as_pg() {
  if $root; then
    (close_fds && cd / && exec runuser -u postgres -- "$@") 3>&- 9<&-
  else
    (close_fds && cd / && exec "$@") 3>&- 9<&-
  fi
}

# One invocation at a time (the tests may start it in parallel): a lock on this script's file.
lock() {
  if command -v flock >/dev/null; then
    exec 9<"$script"
    flock 9
  fi
}

install_postgres() {
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && return 0
  $root || die "PostgreSQL's server binaries are missing (/usr/lib/postgresql/*/bin/initdb): run this as root to install them, or apt-get install postgresql"
  command -v apt-get >/dev/null || die "PostgreSQL's server binaries are missing and there is no apt-get"
  say "installing Debian's postgresql package"
  export DEBIAN_FRONTEND=noninteractive
  if ! (close_fds && apt-get install -y -qq postgresql >/dev/null 2>&1) 3>&- 9<&-; then
    (close_fds && apt-get update -qq && apt-get install -y -qq postgresql >/dev/null) 3>&- 9<&-
  fi
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null ||
    die "apt-get installed postgresql, yet there is no /usr/lib/postgresql/*/bin/initdb"
}

# The binaries of the cluster's version, or of the newest installed version for a new cluster.
pick_bindir() {
  local version
  if [ -f "$dir/PG_VERSION" ]; then
    version=$(cat "$dir/PG_VERSION")
    bindir=/usr/lib/postgresql/$version/bin
    [ -x "$bindir/pg_ctl" ] || die "$dir was made by PostgreSQL $version, whose binaries ($bindir) are not installed: install them, or start afresh with 'scripts/postgres.sh reset'"
  else
    bindir=$(printf '%s\n' /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)
    bindir=${bindir%/initdb}
  fi
}

check_access() {
  if $root; then
    id postgres >/dev/null 2>&1 || die "there is no postgres system user (Debian's postgresql-common makes it)"
    if [ -f "$dir/PG_VERSION" ] && [ "$(stat -c %U "$dir")" != postgres ]; then
      die "$dir belongs to $(stat -c %U "$dir"), not postgres: run as that user, or set COCKPIT_PG_DIR"
    fi
  elif [ -e "$dir" ] && { [ ! -x "$dir" ] || [ ! -O "$dir" ]; }; then
    die "$dir belongs to someone else ($(stat -c %U "$dir")): run as root, or set COCKPIT_PG_DIR"
  fi
}

# The state (R, S, Z...) of the process whose pid postmaster.pid holds; nothing without one.
postmaster_state() {
  local pid stat
  pid=$(head -n 1 "$dir/postmaster.pid" 2>/dev/null) || return 0
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 0
  stat=${stat##*') '}
  echo "${stat%% *}"
}

# A postmaster killed a moment ago lingers as a zombie until something reaps it: pg_ctl takes
# it for a live server, and a new postmaster refuses to start beside its pid.
is_running() {
  [ "$(postmaster_state)" != Z ] && as_pg "$bindir/pg_ctl" status -D "$dir" >/dev/null 2>&1
}

fail_with_log() {
  if [ -f "$log" ]; then
    echo "--- last lines of $log:" >&2
    tail -n 30 "$log" >&2
    echo "---" >&2
  fi
  die "$*"
}

init_cluster() {
  local made=false locale=C
  if [ -e "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
    die "$dir exists, is not empty and holds no PostgreSQL cluster: remove it, or set COCKPIT_PG_DIR"
  fi
  [ -e "$dir" ] || made=true
  mkdir -p "$dir"
  if $root; then chown postgres:postgres "$dir"; fi
  chmod 700 "$dir"
  if ! as_pg test -w "$dir"; then
    if $made; then rmdir "$dir"; fi
    die "the postgres user cannot write $dir (a parent directory shuts it out): set COCKPIT_PG_DIR somewhere it can reach, e.g. under /tmp"
  fi
  if locale -a 2>/dev/null | grep -ixE 'c\.utf-?8' >/dev/null; then locale=C.UTF-8; fi
  say "creating a PostgreSQL $(basename "$(dirname "$bindir")") cluster in $dir"
  as_pg "$bindir/initdb" -D "$dir" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale="$locale" >/dev/null
}

# Writes a file of the data directory (as its owner) unless it already holds that text;
# true when it changed.
write_conf() {
  local file=$dir/$1 text=$2
  if [ -f "$file" ] && [ "$(cat "$file")" = "$text" ]; then return 1; fi
  printf '%s\n' "$text" | as_pg tee "$file.tmp" >/dev/null
  as_pg mv "$file.tmp" "$file"
}

# The test CA and the server's certificate and key, made once in the data directory; the CA's
# certificate copied to $ca on every start.
tls_files() {
  local tmp f
  if ! as_pg test -f "$dir/server.key" || ! as_pg test -f "$dir/server.crt" ||
    ! as_pg test -f "$dir/test-ca.pem"; then
    command -v openssl >/dev/null || die "openssl is missing (apt-get install openssl)"
    tmp=$(mktemp -d)
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=cockpit test CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout "$tmp/ca.key" -out "$tmp/ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
      -keyout "$tmp/server.key" -out "$tmp/server.csr" 2>/dev/null
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >"$tmp/ext"
    openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" \
      -CAcreateserial -days 3650 -extfile "$tmp/ext" -out "$tmp/server.crt" 2>/dev/null
    for f in server.key server.crt; do as_pg tee "$dir/$f" <"$tmp/$f" >/dev/null; done
    as_pg tee "$dir/test-ca.pem" <"$tmp/ca.pem" >/dev/null
    as_pg chmod 600 "$dir/server.key"
    rm -rf "$tmp"
  fi
  as_pg cat "$dir/test-ca.pem" >"$ca.tmp"
  mv "$ca.tmp" "$ca"
}

configure() {
  local includes="include = 'cockpit.conf'
include = 'cockpit-durability.conf'"
  grep -qxF "include = 'cockpit-durability.conf'" "$dir/postgresql.conf" ||
    printf '\n# scripts/postgres.sh (re)writes these two on every start.\n%s\n' "$includes" |
    as_pg tee -a "$dir/postgresql.conf" >/dev/null
  restart=false reload=false
  tls_files
  # Settings a restart applies.
  if write_conf cockpit.conf "# Written by scripts/postgres.sh on every start: edit the script, not this file.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 200
password_encryption = 'scram-sha-256'
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'"; then restart=true; fi
  # Settings a reload applies.
  if write_conf cockpit-durability.conf "# Written by scripts/postgres.sh on every start: COCKPIT_PG_FAST=1 turns these off.
fsync = $durability
synchronous_commit = $durability
full_page_writes = $durability"; then reload=true; fi
  if write_conf pg_hba.conf "# Written by scripts/postgres.sh on every start. The unix socket sits in the data directory
# (mode 0700), so only its owner and root can use trust; TCP is 127.0.0.1 only, with passwords.
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  trust
host    all       all   127.0.0.1/32   scram-sha-256"; then reload=true; fi
}

wait_ready() {
  local deadline=$((SECONDS + wait_secs))
  until "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -d postgres -t 1; do
    is_running || fail_with_log "PostgreSQL stopped before it accepted connections"
    ((SECONDS < deadline)) || fail_with_log "PostgreSQL does not accept connections on 127.0.0.1:$port after ${wait_secs}s"
    sleep 0.2
  done
}

# The role and its database, created when missing; the role's rights and password are set again
# on every start.
ensure_role() {
  as_pg "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cockpit') THEN
    CREATE ROLE cockpit;
  END IF;
END
$$;
ALTER ROLE cockpit LOGIN CREATEDB PASSWORD 'cockpit';
SELECT 'CREATE DATABASE cockpit OWNER cockpit'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'cockpit')\gexec
SQL
}

# Connects with the URL itself and waits (briefly, after a reload) for the asked-for fsync.
check_url() {
  local got=""
  for _ in $(seq 1 50); do
    got=$("$bindir/psql" -X -A -t -c 'SHOW fsync' "$url") || fail_with_log "cannot connect with $url"
    [ "$got" != "$durability" ] || return 0
    sleep 0.1
  done
  die "the server runs with fsync = $got, not $durability, after a reload"
}

start() {
  local deadline
  lock
  install_postgres
  check_access
  pick_bindir
  [ -f "$dir/PG_VERSION" ] || init_cluster
  ((${#dir} + ${#port} + 11 <= 107)) || die "COCKPIT_PG_DIR is too long for a unix socket path: $dir"
  configure
  if is_running; then
    if $restart; then
      say "restarting (its settings changed)"
      as_pg "$bindir/pg_ctl" restart -D "$dir" -l "$log" -m fast -w -t "$wait_secs" -s ||
        fail_with_log "PostgreSQL did not restart"
    elif $reload; then
      as_pg "$bindir/pg_ctl" reload -D "$dir" -s
    fi
  else
    deadline=$((SECONDS + wait_secs))
    while [ "$(postmaster_state)" = Z ] && ((SECONDS < deadline)); do sleep 0.2; done
    say "starting PostgreSQL on 127.0.0.1:$port (log: $log)"
    as_pg "$bindir/pg_ctl" start -D "$dir" -l "$log" -w -t "$wait_secs" -s ||
      fail_with_log "PostgreSQL did not start"
  fi
  wait_ready
  ensure_role
  check_url
  say "running in $dir, fsync $durability"
  echo "$url" >&3
}

stop() {
  if [ ! -f "$dir/PG_VERSION" ]; then
    say "no cluster in $dir"
    return 0
  fi
  check_access
  pick_bindir
  if is_running; then
    as_pg "$bindir/pg_ctl" stop -D "$dir" -m fast -w -t "$wait_secs" -s
    say "stopped the cluster in $dir"
  else
    say "the cluster in $dir is not running"
  fi
}

reset() {
  lock
  stop
  [ -e "$dir" ] || return 0
  if [ -f "$dir/PG_VERSION" ] || [ -z "$(ls -A "$dir")" ]; then
    rm -rf "$dir"
    say "removed $dir"
  else
    die "$dir holds no PostgreSQL cluster: not removing it"
  fi
}

case ${1:-start} in
start) start ;;
url) echo "$url" >&3 ;;
ca) echo "$ca" >&3 ;;
stop) lock && stop ;;
reset) reset ;;
*) die "usage: scripts/postgres.sh [start|url|stop|reset]" ;;
esac
