-- The tables of carecycle_webhooks.postgres.PostgresIdempotencyStore.
--
-- {table}: one row per webhook-id whose handlers' transaction committed (the done mark),
-- kept until expires_at. {marks}: with Dispatcher(skip_out_of_order=True), one row per
-- customer (its id, or "tenant/customer-id") holding the newest updatedAt processed, in
-- microseconds since the epoch, written in the same transaction as the done mark and
-- kept as long.
--
-- PostgresIdempotencyStore.create_table() runs this file with the placeholders replaced,
-- quoted as identifiers: {table} by the store's table name (default
-- carecycle_webhook_deliveries), {marks} by that name and "_marks" (in the same schema),
-- {index} and {marks_index} by the table names and "_expires_at" or "_marks_expiry". To
-- create the tables with a migration tool or psql instead, replace them yourself. Safe to
-- run again.
--
-- No payload value is stored: the webhook-id, the customer's key, an updatedAt and
-- timestamps only. The store takes transaction-scoped advisory locks per webhook-id and
-- per customer, so in-flight deliveries leave no row.

CREATE TABLE IF NOT EXISTS {table} (
    webhook_id text PRIMARY KEY,
    done_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

-- Pruning deletes the oldest expired rows first, a bounded batch at a time.
CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at);

CREATE TABLE IF NOT EXISTS {marks} (
    customer_key text PRIMARY KEY,
    updated_at_us bigint NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE INDEX IF NOT EXISTS {marks_index} ON {marks} (expires_at);
