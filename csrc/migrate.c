#include "migrate.h"

#include <stdlib.h>
#include <string.h>

#define LOCK_SECONDS 120
/* DDL on a large table can take hours: migrations run on their own link with this read and
 * write timeout instead of the broker's. */
#define DDL_TIMEOUT 86400

static const char SQL_CREATE_TABLE[] =
    "CREATE TABLE IF NOT EXISTS celers_migrations ("
    " version VARCHAR(255) NOT NULL,"
    " name VARCHAR(255) NOT NULL DEFAULT '',"
    " applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),"
    " PRIMARY KEY (version)"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";
/* Named locks are server-wide: include the database so separate schemas do not wait (hashed:
 * MySQL 8 refuses lock names over 64 characters). */
static const char SQL_LOCK[] = "SELECT GET_LOCK(CONCAT('celers_migrate:', MD5(DATABASE())), ?)";
static const char SQL_UNLOCK[] = "SELECT RELEASE_LOCK(CONCAT('celers_migrate:', MD5(DATABASE())))";
static const char SQL_APPLIED[] = "SELECT version FROM celers_migrations";
/* A migration may record itself in the transaction that does its work (022 does). */
static const char SQL_RECORD[] = "INSERT INTO celers_migrations (version, name) VALUES (?, ?) "
                                 "ON DUPLICATE KEY UPDATE version = version";
/* Before lua-NNN, ours were recorded as bare NNN like the Rust broker's own (which share 006-008
 * and 010 with other names): rename those records, told apart by name. */
// clang-format off
static const char SQL_RENAME_OURS[] =
    "UPDATE celers_migrations SET version = CONCAT('lua-', version) WHERE (version, name) IN "
    "(('004', 'queues_and_leases'), ('005', 'queue_pauses'), ('006', 'recurring_runs'), "
    "('007', 'worker_heartbeats'), ('008', 'admin'), ('010', 'ack_and_claim'))";
static const char SQL_LIST[] =
    "SELECT version, name, " CE_EPOCH("applied_at") " FROM celers_migrations ORDER BY version";
// clang-format on

/* The error a finished DDL step gives when run again. A migration interrupted after some of its
 * statements ran (each DDL commits on its own) is run again from its start by the next
 * migrate(): the steps already done answer with one of these and are passed over. */
static int already_done(const ce_error *err)
{
    switch (err->errnum) {
    case 1050: /* table already exists */
    case 1060: /* duplicate column name */
    case 1061: /* duplicate key name */
    case 1091: /* can't drop: does not exist */
    case 1304: /* procedure already exists */
    case 1826: /* duplicate foreign key constraint name */
        return 1;
    default:
        return 0;
    }
}

/* Run each statement of a migration. A statement ends with the delimiter (';' unless a
 * "DELIMITER x" line, as in the mariadb client, changed it) at the end of a line. Lines that
 * start with "--" are comments. */
static int run_script(ce_conn *c, const char *script, ce_error *err)
{
    size_t len = strlen(script), used = 0;
    char *stmt = malloc(len + 1), delim[16] = ";";
    const char *line = script;
    if (!stmt) return ce_error_set(err, CE_ENOMEM, "out of memory");
    while (*line) {
        const char *eol = strchr(line, '\n'), *end;
        size_t dl = strlen(delim);
        if (!eol) eol = line + strlen(line);
        end = eol;
        while (end > line && (end[-1] == ' ' || end[-1] == '\r' || end[-1] == '\t'))
            end--;
        if (strncmp(line, "DELIMITER ", 10) == 0 && end - line > 10 && end - line - 10 < 16) {
            memcpy(delim, line + 10, (size_t)(end - line - 10));
            delim[end - line - 10] = '\0';
        } else if (!(end - line >= 2 && line[0] == '-' && line[1] == '-')) {
            int last = (size_t)(end - line) >= dl && memcmp(end - dl, delim, dl) == 0;
            size_t keep = (size_t)(end - line) - (last ? dl : 0);
            memcpy(stmt + used, line, keep);
            used += keep;
            stmt[used++] = '\n';
            if (last) {
                stmt[used] = '\0';
                if (ce_conn_query(c, stmt, err) < 0 && !already_done(err)) {
                    free(stmt);
                    return -1;
                }
                used = 0;
            }
        }
        line = *eol ? eol + 1 : eol;
    }
    free(stmt);
    return 0;
}

static int is_applied(const ce_rows *done, const char *version)
{
    for (unsigned int r = 0; r < done->nrows; r++) {
        const ce_value *v = CE_CELL(done, r, 0);
        if (v->data && strcmp(v->data, version) == 0) return 1;
    }
    return 0;
}

static int migrate_locked(ce_conn *c, int *applied, ce_error *err)
{
    ce_rows done = {0};
    if (ce_conn_query(c, SQL_CREATE_TABLE, err) < 0) return -1;
    if (ce_conn_query(c, SQL_RENAME_OURS, err) < 0) return -1;
    if (ce_exec(c, SQL_APPLIED, NULL, 0, &done, NULL, err) < 0) return -1;
    for (unsigned int i = 0; i < ce_migrations_count; i++) {
        const ce_migration *m = &ce_migrations[i];
        ce_param p[2] = {ce_pstr(m->version), ce_pstr(m->name)};
        if (is_applied(&done, m->version)) continue;
        if (run_script(c, m->sql, err) < 0 || ce_exec(c, SQL_RECORD, p, 2, NULL, NULL, err) < 0) {
            ce_error_prefix(err, "migration ", m->version, "_", m->name, ": ", (const char *)NULL);
            ce_rows_free(&done);
            return -1;
        }
        applied[i] = 1;
    }
    ce_rows_free(&done);
    return 0;
}

static int migrate_op(ce_conn *c, void *ctx, ce_error *err)
{
    int *applied = ctx, rc;
    ce_param p = ce_pint(LOCK_SECONDS);
    ce_rows got = {0};
    ce_error unlock_err;
    memset(applied, 0, sizeof *applied * ce_migrations_count);
    if (ce_exec(c, SQL_LOCK, &p, 1, &got, NULL, err) < 0) return -1;
    rc = got.nrows && ce_cell_int(&got, 0, 0, 0) == 1;
    ce_rows_free(&got);
    if (!rc)
        return ce_error_set(err, CE_ELOCKWAIT,
                            "another process held the migration lock "
                            "for %d seconds",
                            LOCK_SECONDS);
    rc = migrate_locked(c, applied, err);
    /* The lock also goes when the session ends, so a failed release is harmless. */
    if (ce_exec(c, SQL_UNLOCK, NULL, 0, &got, NULL, &unlock_err) == 0) ce_rows_free(&got);
    return rc;
}

int ce_migrate(ce_conn *c, int *applied, ce_error *err)
{
    ce_config cfg = c->cfg; /* shallow: ce_conn_open copies what it keeps */
    ce_conn *ddl;
    int rc;
    cfg.read_timeout = cfg.write_timeout = DDL_TIMEOUT;
    ddl = ce_conn_open(&cfg, err);
    if (!ddl) return -1;
    /* DDL is never repeated by the core (CE_ONCE): after "lost" the server may still be
     * building an index. Each migration is recorded as it completes and a half-done one is
     * finished by the next migrate() (already_done). */
    rc = ce_conn_run(ddl, CE_ONCE, migrate_op, applied, err);
    ce_conn_close(ddl);
    return rc;
}

int ce_list_migrations(ce_conn *c, ce_rows *out, ce_error *err)
{
    return ce_run(c, CE_REPEAT, SQL_LIST, NULL, 0, out, NULL, err);
}
