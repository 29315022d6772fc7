#!/usr/bin/env bash
# The whole test suite again, on PostgreSQL: a private cluster from scripts/postgres.sh (Debian's
# PostgreSQL, installed when missing; fsync off, as it holds only test data), emptied first, then
# scripts/test.sh with COCKPIT_TEST_POSTGRES set. Every lib test's store and every cockpit an
# integration test starts then keeps its state in a schema of its own in that cluster. The
# cluster is stopped at the end. Run by .ci/run after the SQLite run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/postgres.sh reset
url=$(COCKPIT_PG_FAST=1 bash scripts/postgres.sh start)
trap 'bash scripts/postgres.sh stop' EXIT
COCKPIT_TEST_POSTGRES="$url" COCKPIT_TEST_POSTGRES_CA=$(bash scripts/postgres.sh ca) bash scripts/test.sh
