-- Indexes every supported server reads in order (MariaDB before 10.8 ignores DESC in an index
-- definition; there the old (queue, state, priority DESC, ...) index forced a filesort that
-- locked every ready row). claim_rank is the negated priority, so "priority DESC,
-- scheduled_at, id" is "claim_rank, scheduled_at, id", all ascending.
-- idx_celers_tasks_staging serves the staging step (scheduled rows whose time came, oldest
-- first) and list_scheduled_tasks. One ALTER, so the table is rebuilt once.
ALTER TABLE celers_tasks
    ADD COLUMN claim_rank BIGINT AS (0 - priority) STORED,
    ADD INDEX idx_celers_tasks_claim (queue, state, claim_rank, scheduled_at, id),
    ADD INDEX idx_celers_tasks_staging (queue, state, scheduled_at),
    DROP INDEX idx_celers_tasks_dequeue;
