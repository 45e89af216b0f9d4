-- Live workers report here; a row whose last_seen is old belongs to a dead worker.
CREATE TABLE IF NOT EXISTS celers_workers (
    worker_id  VARCHAR(255) NOT NULL,
    queue      VARCHAR(255) NOT NULL,
    hostname   VARCHAR(255) NULL,
    pid        INT          NULL,
    started_at DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    last_seen  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    processed  BIGINT       NOT NULL DEFAULT 0,
    failed     BIGINT       NOT NULL DEFAULT 0,
    info       JSON         NULL,
    PRIMARY KEY (worker_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
