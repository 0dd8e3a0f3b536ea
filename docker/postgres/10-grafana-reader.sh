#!/bin/sh
# First start of the postgres container only (docker-entrypoint-initdb.d): the role Grafana logs in with.
# Read-only by default and with a statement timeout, so a dashboard cannot write or hog the database.
# Its SELECT grants are given by docker/postgres/grants.sql after each migration (the tables do not
# exist yet at this point).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v reader="$GRAFANA_DB_USER" -v pw="$GRAFANA_DB_PASSWORD" <<'SQL'
CREATE ROLE :"reader" LOGIN PASSWORD :'pw';
ALTER ROLE :"reader" SET default_transaction_read_only = on;
ALTER ROLE :"reader" SET statement_timeout = '15s';
SQL
