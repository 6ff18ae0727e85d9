-- As SQLite's 0006: vendor bookings (issue 16; docs/bookings.md). The intent to book is written
-- before the vendor call and the vendor's answer the moment it arrives.
--   intent   : the call is (or was) in flight; nothing is known yet
--   booked   : the vendor answered with a session of its own (vendor_session_id, handle)
--   refused  : the vendor answered with a refusal: nothing was booked
--   released : what was booked has been ended at the vendor (or was never made)
--   in_doubt : the vendor may have booked and cannot be asked; likely_charge is what it probably
--              charges, billed_to who bears it
CREATE TABLE bookings (
    session_id TEXT PRIMARY KEY REFERENCES sessions(id),
    deployment_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    tenant TEXT NOT NULL,
    state TEXT NOT NULL
        CHECK (state IN ('intent', 'booked', 'refused', 'released', 'in_doubt')),
    vendor_session_id TEXT,
    handle JSONB NOT NULL DEFAULT '{}',
    likely_charge BIGINT NOT NULL DEFAULT 0 CHECK (likely_charge >= 0),
    billed_to TEXT CHECK (billed_to IS NULL OR billed_to IN ('operator', 'tenant')),
    note TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX bookings_unresolved ON bookings(state) WHERE state IN ('intent', 'booked');
CREATE INDEX bookings_vendor ON bookings(provider, vendor_session_id);

-- What the operator bears, apart from every tenant's balance (append-only; one row per session).
CREATE TABLE operator_ledger (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('in_doubt')),
    amount BIGINT NOT NULL CHECK (amount >= 0),
    session_id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    provider TEXT NOT NULL,
    note TEXT,
    created_at TIMESTAMPTZ NOT NULL
);

-- Admin grants are idempotent per request: the platform's request id is kept with the grant.
CREATE TABLE grant_requests (
    request_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    amount BIGINT NOT NULL,
    actor TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

-- Signed Slack requests already handled (their signature), kept for the signature window.
CREATE TABLE seen_requests (
    key TEXT PRIMARY KEY,
    seen_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX seen_requests_at ON seen_requests(seen_at);
