# Sourced by .ci/run and .ci/newest-releases: the services some tests need, and the README's test command.

# Debian's chromium (the browser tests drive it through Playwright) and postgresql (the team-storage test).
install_test_services() {
  if ! command -v chromium > /dev/null || ! [ -x /usr/lib/postgresql/15/bin/pg_ctl ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium postgresql > .ci-apt.log 2>&1 \
      || { tail -n 40 .ci-apt.log >&2; exit 1; }
  fi
}

# A throwaway PostgreSQL server on loopback for this run only, stopped on exit; the tests find it through
# ALBUM_PIPELINE_TEST_POSTGRES_URL and skip, saying so, where it is unset.
start_throwaway_postgres() {
  pg_bin=/usr/lib/postgresql/15/bin
  pg_dir=$(mktemp -d /tmp/album-pipeline-ci-pg.XXXXXX)
  chown postgres "$pg_dir"
  pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  runuser -u postgres -- "$pg_bin/initdb" --auth=trust --username=postgres -D "$pg_dir/data" > "$pg_dir/initdb.log"
  runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w \
    -o "-h 127.0.0.1 -p $pg_port -k $pg_dir" start > /dev/null
  trap 'runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast stop > /dev/null; rm -rf "$pg_dir"' EXIT
  runuser -u postgres -- "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" album_pipeline_test
  export ALBUM_PIPELINE_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$pg_port/album_pipeline_test"
}

# The README's test command in virtual environment $1 (further arguments go to pytest); pytest's "no tests
# collected" (exit 5) is a failure.
run_readme_tests() {
  local venv=$1
  shift
  local status
  set +e
  "$venv/bin/pytest" -q "$@"
  status=$?
  set -e
  if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests" >&2
    return 1
  fi
  return "$status"
}
