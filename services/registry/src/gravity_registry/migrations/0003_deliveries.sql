-- The delivery log: every webhook attempt fanout reports on gravity.deliveries.v1, projected for
-- GET /v1/apps/{appId}/deliveries. No foreign key: attempts may be reported after the app is deleted.

CREATE TABLE deliveries (
    app_id           text NOT NULL,
    tenant_id        text NOT NULL,
    message_id       text NOT NULL,
    attempt          integer NOT NULL,
    succeeded        boolean NOT NULL,
    response_code    integer,
    duration_ms      double precision NOT NULL,
    error            text,
    attempted_at     timestamptz NOT NULL,
    next_attempt_at  timestamptz,
    -- a replayed record has the same key: projecting it twice stores it once
    PRIMARY KEY (app_id, message_id, attempt, attempted_at)
);
CREATE INDEX deliveries_in_order ON deliveries (app_id, attempted_at DESC, message_id DESC, attempt DESC);
CREATE INDEX deliveries_by_message ON deliveries (app_id, message_id, attempted_at DESC);
