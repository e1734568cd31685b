-- Apps (webhook endpoints with their signing secrets) and RingCentral connections (one per tenant).
-- Every secret column holds SecretBox ciphertext (key from GRAVITY_SECRET_KEY), never plaintext.

CREATE TABLE apps (
    app_id                 text PRIMARY KEY,
    tenant_id              text NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    name                   text NOT NULL,
    webhook_url            text,
    disabled               boolean NOT NULL DEFAULT false,
    signing_secret_enc     text NOT NULL,
    previous_secret_enc    text,            -- still signed with until previous_expires_at (rotation)
    previous_expires_at    timestamptz,
    created_at             timestamptz NOT NULL,
    updated_at             timestamptz NOT NULL
);
CREATE INDEX apps_by_tenant ON apps (tenant_id, created_at, app_id);

CREATE TABLE rc_connections (
    tenant_id              text PRIMARY KEY REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    server_url             text NOT NULL,
    client_id              text NOT NULL,
    client_secret_enc      text NOT NULL,
    jwt_enc                text NOT NULL,
    access_token_enc       text NOT NULL,
    access_expires_at      timestamptz NOT NULL,
    refresh_token_enc      text,
    refresh_expires_at     timestamptz,
    subscription_id        text NOT NULL,
    expires_at             timestamptz NOT NULL,   -- the subscription's expirationTime
    status                 text NOT NULL,
    last_error             text,
    connected_at           timestamptz NOT NULL,
    next_check_at          timestamptz NOT NULL,
    backfill_needed        boolean NOT NULL DEFAULT true
);
CREATE INDEX rc_connections_due ON rc_connections (next_check_at);
