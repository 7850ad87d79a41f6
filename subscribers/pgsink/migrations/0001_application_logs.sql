-- 0001: the application_logs table, one row per event, and its dead-letter table.
--
-- Column names are the event's JSON field names (package event). The nested request, response and
-- attributes are jsonb. Optional columns are NULL where the event's JSON omits the field (empty string,
-- zero number).

CREATE TABLE application_logs (
    id          uuid PRIMARY KEY,             -- the event's id (UUIDv7); writes are idempotent on it
    ts          timestamptz NOT NULL,         -- event time
    level       text NOT NULL CHECK (level IN ('DEBUG', 'INFO', 'WARN', 'ERROR')),
    kind        text NOT NULL CHECK (kind IN ('http', 'app')),
    message     text NOT NULL,
    service     text,
    request_id  text,
    trace_id    text,
    span_id     text,
    method      text,
    route       text,
    path        text,
    status      int,
    duration_ms double precision,
    client_ip   text,
    user_agent  text,
    bytes_in    bigint,
    bytes_out   bigint,
    error       text,
    source      text,
    request     jsonb,
    response    jsonb,
    attrs       jsonb,
    inserted_at timestamptz NOT NULL DEFAULT now()
);

-- Time-range queries ("the last hour, newest first") are the common case. Rows arrive roughly in ts
-- order, so BRIN would be much smaller, but several writers interleave and queries want ORDER BY ts
-- DESC LIMIT n, which only a btree serves.
CREATE INDEX application_logs_ts_idx ON application_logs (ts);
-- "Everything about this request": app events without a request id are not indexed.
CREATE INDEX application_logs_request_id_idx ON application_logs (request_id) WHERE request_id IS NOT NULL;
-- "Errors of the last hour".
CREATE INDEX application_logs_level_ts_idx ON application_logs (level, ts);

-- Events that could not be stored in application_logs even after sanitizing (a permanent error such as
-- a check violation), one row per event, so that one bad event does not block its batch and is not
-- lost. Created here for the sink's dead-letter path; nothing writes it yet.
CREATE TABLE application_logs_dead_letter (
    id        uuid,                               -- the event's id, when it has one
    batch_id  uuid NOT NULL,                      -- the batch it came in (subscribers.Batch.ID)
    reason    text NOT NULL,                      -- why it was refused (error message, SQLSTATE)
    raw       bytea NOT NULL,                     -- the event's JSON as received; bytea because its
                                                  -- text may be what PostgreSQL refused
    failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX application_logs_dead_letter_failed_at_idx ON application_logs_dead_letter (failed_at);
