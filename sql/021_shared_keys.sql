-- Keys both brokers rely on, whichever created the tables: one result per task (the Rust
-- celers_results has only a plain index on task_id; duplicates are dropped first, keeping the
-- newest), and our dead-letter indexes (003) on a database whose 003 was the Rust broker's.
-- celers_ddl(when, kind, table, name, ddl) runs ddl when the named column, index or CHECK
-- constraint of the table exists (when = 1) or is missing (when = 0): MySQL 8 has no
-- ADD COLUMN IF NOT EXISTS. Dropped again at the end of this file.
DROP PROCEDURE IF EXISTS celers_ddl;

DELIMITER //
CREATE PROCEDURE celers_ddl(IN p_when INT, IN p_kind VARCHAR(16), IN p_table VARCHAR(64),
                            IN p_name VARCHAR(64), IN p_ddl TEXT)
BEGIN
    DECLARE v_found INT DEFAULT 0;
    IF p_kind = 'column' THEN
        SELECT COUNT(*) INTO v_found FROM information_schema.columns
         WHERE table_schema = DATABASE() AND table_name = p_table AND column_name = p_name;
    ELSEIF p_kind = 'index' THEN
        SELECT COUNT(*) INTO v_found FROM information_schema.statistics
         WHERE table_schema = DATABASE() AND table_name = p_table AND index_name = p_name;
    ELSE
        SELECT COUNT(*) INTO v_found FROM information_schema.table_constraints
         WHERE table_schema = DATABASE() AND table_name = p_table AND constraint_name = p_name
           AND constraint_type = 'CHECK';
    END IF;
    IF (v_found > 0) = (p_when = 1) THEN
        SET @celers_ddl = p_ddl;
        PREPARE celers_ddl_statement FROM @celers_ddl;
        EXECUTE celers_ddl_statement;
        DEALLOCATE PREPARE celers_ddl_statement;
    END IF;
END //
DELIMITER ;

DELETE older FROM celers_results AS older
  JOIN celers_results AS newer
    ON newer.task_id = older.task_id
   AND (newer.created_at > older.created_at
        OR (newer.created_at = older.created_at AND newer.id > older.id));

CALL celers_ddl(0, 'index', 'celers_results', 'uq_celers_results_task',
    'CREATE UNIQUE INDEX uq_celers_results_task ON celers_results (task_id)');
CALL celers_ddl(1, 'index', 'celers_results', 'idx_results_task_id',
    'DROP INDEX idx_results_task_id ON celers_results');
CALL celers_ddl(0, 'index', 'celers_dead_letter_queue', 'idx_celers_dlq_task',
    'CREATE INDEX idx_celers_dlq_task ON celers_dead_letter_queue (task_id)');
CALL celers_ddl(0, 'index', 'celers_dead_letter_queue', 'idx_celers_dlq_failed',
    'CREATE INDEX idx_celers_dlq_failed ON celers_dead_letter_queue (failed_at)');

DROP PROCEDURE celers_ddl;
