#!/bin/sh
# One-shot (temporal-schema): create Temporal's two databases in PostgreSQL and
# bring their schemas to this admin-tools version. Safe to run on every start:
# the databases may exist already, and the schema update applies only what is new.
set -eu

: "${POSTGRES_SEEDS:?}" "${POSTGRES_USER:?}" "${SQL_PASSWORD:?}"
PORT="${DB_PORT:-5432}"
SCHEMA=/etc/temporal/schema/postgresql/v12

until nc -z "$POSTGRES_SEEDS" "$PORT"; do
  echo "waiting for PostgreSQL at $POSTGRES_SEEDS:$PORT"
  sleep 1
done

for database in temporal temporal_visibility; do
  case "$database" in
    temporal) dir="$SCHEMA/temporal/versioned" ;;
    *) dir="$SCHEMA/visibility/versioned" ;;
  esac
  sql() {
    temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$PORT" \
      -u "$POSTGRES_USER" --db "$database" "$@"
  }
  sql create || echo "database $database exists"
  sql setup-schema -v 0.0
  sql update-schema -d "$dir"
done
echo "PostgreSQL schemas are up to date"
