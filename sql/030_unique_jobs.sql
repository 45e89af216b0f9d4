-- Unique jobs (enqueue's `unique` option). unique_key is the SHA-256 of what makes two tasks
-- the same (name, queue, payload or chosen fields, the period's window); unique_states is the
-- bit set of the states in which a task holds its key (bit n-1 for the n-th state below).
-- unique_hold is the key while the task is in one of those states and NULL otherwise, so the
-- unique index (NULLs never collide) lets the server, not a check-then-insert, refuse a second
-- holder (VARCHAR, not CHAR: MariaDB refuses CHAR in a generated column, its padding depends
-- on sql_mode); a task that leaves those states, or the table (dead-lettered, archived), frees
-- it. One ALTER.
ALTER TABLE celers_tasks
    ADD COLUMN unique_key VARCHAR(64) CHARACTER SET ascii NULL,
    ADD COLUMN unique_states INT UNSIGNED NULL,
    ADD COLUMN unique_hold VARCHAR(64) CHARACTER SET ascii AS (
        IF(unique_key IS NOT NULL
           AND FIELD(state, 'scheduled', 'pending', 'processing', 'completed', 'failed', 'cancelled') > 0
           AND (unique_states >> (FIELD(state, 'scheduled', 'pending', 'processing', 'completed',
                                        'failed', 'cancelled') - 1)) & 1 = 1,
           unique_key, NULL)) STORED,
    ADD UNIQUE INDEX idx_celers_tasks_unique_hold (unique_hold);
