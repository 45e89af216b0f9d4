-- Inspection, results and archiving (admin.c and friends).
-- Results belong to a queue and remember how the result was encoded ('raw' bytes or 'json').
-- Rows written before this migration (or by the Rust broker) read as queue 'default', raw.
ALTER TABLE celers_results
    ADD COLUMN queue       VARCHAR(255) NOT NULL DEFAULT 'default',
    ADD COLUMN result_type VARCHAR(16)  NOT NULL DEFAULT 'raw';

-- archive_results: per queue, by completion time and by expiry.
CREATE INDEX idx_celers_results_queue_completed ON celers_results (queue, completed_at);
CREATE INDEX idx_celers_results_queue_expires ON celers_results (queue, expires_at);

-- list_tasks{after_id=}: keyset pagination of one queue's tasks in id order (bulk export)
-- reads exactly one page instead of sorting the whole queue for every page.
CREATE INDEX idx_celers_tasks_queue_id ON celers_tasks (queue, id);

-- Archived tasks keep their queue and lifecycle times (created_at stays the archiving time).
ALTER TABLE celers_task_history
    ADD COLUMN queue           VARCHAR(255) NOT NULL DEFAULT 'default',
    ADD COLUMN priority        INT          NULL,
    ADD COLUMN retry_count     INT          NULL,
    ADD COLUMN task_created_at DATETIME(6)  NULL,
    ADD COLUMN started_at      DATETIME(6)  NULL,
    ADD COLUMN completed_at    DATETIME(6)  NULL;

CREATE INDEX idx_celers_history_queue ON celers_task_history (queue, completed_at);
