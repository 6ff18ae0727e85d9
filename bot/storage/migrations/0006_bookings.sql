-- Vendor bookings (issue 16): the intent to book is written before the vendor call and the
-- vendor's answer the moment it arrives, so a crash or a shutdown never loses a paid session.
--   intent   : the call is (or was) in flight; nothing is known yet
--   booked   : the vendor answered with a session of its own (vendor_session_id, handle)
--   refused  : the vendor answered with a refusal: nothing was booked
--   released : what was booked has been ended at the vendor (or was never made)
--   in_doubt : the vendor may have booked and cannot be asked (A2E lists no sessions);
--              likely_charge is what it probably charges, billed_to who bears it
CREATE TABLE bookings (
    session_id TEXT PRIMARY KEY REFERENCES sessions(id),
    deployment_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    tenant TEXT NOT NULL,
    state TEXT NOT NULL
        CHECK (state IN ('intent', 'booked', 'refused', 'released', 'in_doubt')),
    vendor_session_id TEXT,
    handle TEXT NOT NULL DEFAULT '{}',
    likely_charge INTEGER NOT NULL DEFAULT 0 CHECK (likely_charge >= 0),
    billed_to TEXT CHECK (billed_to IS NULL OR billed_to IN ('operator', 'tenant')),
    note TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX bookings_unresolved ON bookings(state) WHERE state IN ('intent', 'booked');
CREATE INDEX bookings_vendor ON bookings(provider, vendor_session_id);

-- What the operator bears, apart from every tenant's balance: an in-doubt booking billed to the
-- operator is one row (append-only; one per session).
CREATE TABLE operator_ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('in_doubt')),
    amount INTEGER NOT NULL CHECK (amount >= 0),
    session_id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    provider TEXT NOT NULL,
    note TEXT,
    created_at TEXT NOT NULL
);

-- Admin grants are idempotent per request: the platform's request id is kept with the grant.
CREATE TABLE grant_requests (
    request_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    amount INTEGER NOT NULL,
    actor TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- Signed Slack requests already handled (signature), kept for the signature window.
CREATE TABLE seen_requests (
    key TEXT PRIMARY KEY,
    seen_at REAL NOT NULL
);
CREATE INDEX seen_requests_at ON seen_requests(seen_at);
