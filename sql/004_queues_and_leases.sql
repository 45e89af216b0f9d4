-- Real queues, leases fenced by a claim id, per-task timeouts, idempotency keys and the
-- payload's encoding. Rows written before this migration (or by the Rust broker) read as
-- queue 'default' with raw payloads.
ALTER TABLE celers_tasks
    ADD COLUMN queue            VARCHAR(255) NOT NULL DEFAULT 'default',
    ADD COLUMN claim_id         CHAR(36)     NULL,
    ADD COLUMN lease_expires_at DATETIME(6)  NULL,
    ADD COLUMN timeout_seconds  DOUBLE       NULL,
    ADD COLUMN idempotency_key  VARCHAR(255) NULL,
    ADD COLUMN payload_type     VARCHAR(16)  NOT NULL DEFAULT 'raw';

-- The claim query's WHERE and ORDER BY, exactly: no filesort over pending rows.
CREATE INDEX idx_celers_tasks_dequeue
    ON celers_tasks (queue, state, priority DESC, scheduled_at, id);

-- Lease sweeps and processing lists: (state, lease_expires_at) per queue.
CREATE INDEX idx_celers_tasks_lease ON celers_tasks (queue, state, lease_expires_at);

CREATE UNIQUE INDEX uq_celers_tasks_idempotency ON celers_tasks (queue, idempotency_key);

ALTER TABLE celers_dead_letter_queue
    ADD COLUMN queue        VARCHAR(255) NOT NULL DEFAULT 'default',
    ADD COLUMN priority     INT          NOT NULL DEFAULT 0,
    ADD COLUMN max_retries  INT          NOT NULL DEFAULT 3,
    ADD COLUMN payload_type VARCHAR(16)  NOT NULL DEFAULT 'raw',
    ADD COLUMN created_at   DATETIME(6)  NULL;

CREATE INDEX idx_celers_dlq_queue ON celers_dead_letter_queue (queue, failed_at);
