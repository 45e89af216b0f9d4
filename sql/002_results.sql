-- Task results (the celers-broker-sql 0.2 results table).
CREATE TABLE IF NOT EXISTS celers_results (
    id            CHAR(36)     NOT NULL,
    task_id       CHAR(36)     NOT NULL,
    task_name     VARCHAR(255) NOT NULL,
    result        MEDIUMBLOB   NULL,
    error_message TEXT         NULL,
    state         VARCHAR(20)  NOT NULL DEFAULT 'pending',
    created_at    DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    completed_at  DATETIME(6)  NULL,
    expires_at    DATETIME(6)  NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_celers_results_task (task_id),
    INDEX idx_celers_results_expires (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
