-- What Grafana's read-only role may read: the tables of the charger-detail dashboard, the charger registry
-- without its password hash (SPEC 8: no secret in a dashboard), and the ticket columns the operations and
-- battery-swap dashboards count by (no descriptions, diagnoses, notes, assignees or actors). Idempotent; run
-- after every `chargeops db upgrade` (compose service `db-grants`), because migrations may add tables.
-- Usage: psql -v ON_ERROR_STOP=1 -v reader=grafana_reader -f grants.sql
GRANT USAGE ON SCHEMA public TO :"reader";
GRANT SELECT ON connectors, transactions, meter_samples, events TO :"reader";
GRANT SELECT (
    id, site, kind, vendor, model, serial_number, firmware_version, admission, registration_status,
    protocol, connected, gateway_id, last_boot_at, last_seen, created_at, updated_at
) ON chargers TO :"reader";
GRANT SELECT (id, kind, status, priority, depot, component, created_at, updated_at) ON tickets TO :"reader";
GRANT SELECT (id, ticket_id, at, to_status) ON ticket_log TO :"reader";
