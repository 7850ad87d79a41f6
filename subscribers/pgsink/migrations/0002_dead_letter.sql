-- 0002: application_logs_dead_letter holds subscribers.DeadLetter, written by Sink.WriteDeadLetters.
--
-- One row per event (or undecodable line) that could not be stored, with why. Writes are idempotent:
-- a dead letter is identified by its route, its reason and its event id or, when it has none (a line
-- that did not decode), the SHA-256 of its raw bytes; writing it again (a redelivered message, a
-- retried write) inserts nothing (ON CONFLICT DO NOTHING). The same event refused for another reason
-- or on another route is another row.
--
-- 0001 created the table but nothing wrote it, so it is altered in place: no row moves.

ALTER TABLE application_logs_dead_letter
    ADD COLUMN dead_letter_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- surrogate key
    ALTER COLUMN batch_id DROP NOT NULL,                                       -- NULL: no batch was formed
    ADD COLUMN route text NOT NULL DEFAULT '',                                 -- the route ('' when unknown)
    ADD COLUMN detail text,                                                    -- the error text
    -- raw's digest, the identity of a line without an event id; computed by the server.
    ADD COLUMN raw_sha256 bytea GENERATED ALWAYS AS (sha256(raw)) STORED;

COMMENT ON COLUMN application_logs_dead_letter.id IS 'the event''s id; NULL when the line could not be decoded';
COMMENT ON COLUMN application_logs_dead_letter.reason IS 'decode_error, oversize or invalid_data (subscribers.Reason*)';
COMMENT ON COLUMN application_logs_dead_letter.raw IS 'the event''s bytes as received, unchanged (bytea: any bytes)';

CREATE UNIQUE INDEX application_logs_dead_letter_event_key
    ON application_logs_dead_letter (id, route, reason) WHERE id IS NOT NULL;
CREATE UNIQUE INDEX application_logs_dead_letter_line_key
    ON application_logs_dead_letter (raw_sha256, route, reason) WHERE id IS NULL;
-- "What was dead-lettered lately, and why": failed_at already has an index (0001).
CREATE INDEX application_logs_dead_letter_reason_failed_at_idx ON application_logs_dead_letter (reason, failed_at);
