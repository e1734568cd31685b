-- Tenants, API keys, RingCentral subscriptions, the message read model, and the outbox that carries
-- every change to the registry's change streams.

CREATE TABLE tenants (
    tenant_id   text PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL
);

CREATE TABLE api_keys (
    key_id        text PRIMARY KEY,
    tenant_id     text NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    name          text NOT NULL,
    key_sha256    text NOT NULL UNIQUE,  -- the key itself is never stored
    created_at    timestamptz NOT NULL,
    last_used_at  timestamptz
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_at);

CREATE TABLE subscriptions (
    subscription_id            text PRIMARY KEY,
    tenant_id                  text NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    verification_token_sha256  text NOT NULL,
    created_at                 timestamptz NOT NULL
);

-- One row per (tenant, RingCentral message): the projection's idempotence rests on this key.
-- messageId has only 48 bits (contract), so it is indexed, not unique.
CREATE TABLE messages (
    tenant_id        text NOT NULL,
    rc_message_id    text NOT NULL,
    message_id       text NOT NULL,
    direction        text NOT NULL DEFAULT 'inbound',
    from_number      text NOT NULL,
    to_number        text NOT NULL,
    body             text NOT NULL,
    status           text NOT NULL DEFAULT 'received',
    "timestamp"      timestamptz NOT NULL,
    received_at      timestamptz NOT NULL,
    conversation_id  text,
    published        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, rc_message_id)
);
CREATE INDEX messages_by_message_id ON messages (tenant_id, message_id);
CREATE INDEX messages_in_order ON messages (tenant_id, received_at DESC, message_id DESC);

CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    topic       text NOT NULL,
    key         text NOT NULL,
    value       bytea NOT NULL,
    headers     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
