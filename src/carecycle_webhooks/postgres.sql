-- The table of carecycle_webhooks.postgres.PostgresIdempotencyStore: one row per webhook-id
-- whose handlers' transaction committed (the done mark), kept until expires_at.
--
-- PostgresIdempotencyStore.create_table() runs this file with {table} and {index} replaced
-- by the store's table name (default carecycle_webhook_deliveries) and the name of its
-- index (the table name and "_expires_at"), quoted as identifiers. To create the table with
-- a migration tool or psql instead, replace both yourself. Safe to run again.
--
-- No payload value is stored: the webhook-id and two timestamps only. The store takes a
-- transaction-scoped advisory lock per webhook-id, so in-flight deliveries leave no row.

CREATE TABLE IF NOT EXISTS {table} (
    webhook_id text PRIMARY KEY,
    done_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

-- Pruning deletes the oldest expired rows first, a bounded batch at a time.
CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at);
